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
    for name in Entry.__slots__:
        assert getattr(decoded, name) == getattr(original, name)


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
