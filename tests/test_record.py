"""The record format: round trip, and every kind of damage is a miss."""

from __future__ import annotations

import pytest

from fic_middleware import record
from fic_middleware.record import CorruptRecord, Entry, UnknownRecord

from .images import png


def entry() -> Entry:
    body = png("rec")
    return Entry(body, "image/png", record.strong_etag(body), "Wed, 21 Oct 2026 07:28:00 GMT",
                 '"o-1"', 1000.0, 2000.0)


def test_round_trip() -> None:
    original = entry()
    decoded = record.decode(record.encode(original))
    for name in ("body", "content_type", "etag", "last_modified", "origin_etag", "stored_at",
                 "expires_at"):
        assert getattr(decoded, name) == getattr(original, name)


def test_replayed_headers_round_trip() -> None:
    e = entry()
    e.headers = (("Link", "</a.css>; rel=preload"), ("Link", "<b>"), ("X-A", "x:y"))
    assert record.decode(record.encode(e)).headers == e.headers


def test_version_3_record_is_unknown() -> None:
    """Records before replayed headers (version 3) are misses, refetched and rewritten."""
    data = bytearray(record.encode(entry()))
    data[3] = 3
    with pytest.raises(UnknownRecord):
        record.decode(bytes(data))


def test_decodes_from_a_memoryview() -> None:
    assert record.decode(memoryview(record.encode(entry()))).body == png("rec")


def test_optional_fields_round_trip_as_none() -> None:
    e = entry()
    e.last_modified = e.origin_etag = None
    decoded = record.decode(record.encode(e))
    assert decoded.last_modified is None and decoded.origin_etag is None


def test_strong_etag_depends_on_the_bytes() -> None:
    assert record.strong_etag(b"a") != record.strong_etag(b"b")
    assert record.strong_etag(b"a") == record.strong_etag(b"a")


@pytest.mark.parametrize("where", [0, 5, 12, 20, 30, 40, 45, 50, -40, -1],
                         ids=lambda w: f"byte {w}")
def test_any_flipped_byte_is_detected(where: int) -> None:
    data = bytearray(record.encode(entry()))
    data[where] ^= 0x40
    with pytest.raises(CorruptRecord):
        record.decode(bytes(data))


@pytest.mark.parametrize("cut", [0, 10, 44, -1])
def test_truncated_record_is_corrupt(cut: int) -> None:
    data = record.encode(entry())
    with pytest.raises(CorruptRecord):
        record.decode(data[:cut] if cut >= 0 else data[:cut])


def test_unknown_version() -> None:
    data = bytearray(record.encode(entry()))
    data[3] = record.VERSION + 1
    with pytest.raises(UnknownRecord):
        record.decode(bytes(data))


K = b"k" * 16


def test_reader_reuses_an_unchanged_record() -> None:
    reader = record.Reader(1 << 20)
    data = record.encode(entry(), K)
    first = reader.decode(K, memoryview(data))
    assert reader.decode(K, memoryview(bytes(data))) is first


@pytest.mark.parametrize("where", [-1, 5, 45], ids=["body", "header", "meta"])
def test_reader_still_checks_a_remembered_record(where: int) -> None:
    reader = record.Reader(1 << 20)
    data = record.encode(entry(), K)
    reader.decode(K, data)
    damaged = bytearray(data)
    damaged[where] ^= 1
    with pytest.raises(CorruptRecord):
        reader.decode(K, bytes(damaged))


def test_reader_decodes_a_rewritten_record_afresh() -> None:
    reader = record.Reader(1 << 20)
    e = entry()
    first = reader.decode(K, record.encode(e, K))
    e.expires_at += 60
    second = reader.decode(K, record.encode(e, K))
    assert second is not first and second.expires_at == first.expires_at + 60


def test_reader_memo_is_bounded() -> None:
    reader = record.Reader(len(png("rec")) * 2)
    for i in range(5):
        key = bytes([i]) * 16
        reader.decode(key, record.encode(entry(), key))
    assert reader.memo_bytes <= reader.max_bytes
    assert reader.memo_entries() <= 2


def test_a_record_only_checks_out_under_its_own_key() -> None:
    data = record.encode(entry(), b"a" * 16)
    assert record.decode(data, b"a" * 16).body == png("rec")
    with pytest.raises(CorruptRecord):
        record.decode(data, b"b" * 16)
