"""The stored record: a versioned, self-checking header, a little metadata, the body.

Layout (little-endian)::

    b"FIC" | version u8 | flags u8 | stored_at f64 | expires_at f64 | stale_until f64
    | error_until f64 | body digest u64 (xxh3) | body length u32 | meta length u16
    | crc32(key, header, meta) u32 | meta | body

The checksum covers the storage key, so a record moved under another key does not check out.
``stored_at`` is when the response was generated, by our clock (the time it reached us less
its age then), so the Age sent to clients counts time spent upstream. ``expires_at`` ends
freshness; past it the entry may be served while one background fetch
revalidates it until ``stale_until``, and when the origin fails until ``error_until``
(:mod:`freshness` computes all three when the response is stored).

``meta`` is ``content_type NUL etag NUL last_modified NUL origin_etag NUL cache_control NUL
headers`` (latin-1; the origin's Cache-Control is kept for a 304 that does not repeat it;
``headers`` are the replayed origin headers of ``pass_headers``, ``Name:value`` lines joined
by LF, checked by :mod:`fetch` to hold no control character). Flags:
``NEGATIVE`` (the origin said 404/410; no body), ``NO_CACHE`` (the origin said no-cache:
every use asks it first), ``MUST_REVALIDATE`` (never served stale; clients are told so) and
``ENCRYPTED`` (the stored body is ``nonce | AES-GCM(body)`` with the storage key as
associated data, so a record cannot be moved to another key), ``VARIES`` (no body: the
origin answered ``Vary: Accept`` for this URL, its variants live under
:func:`routing.variant_key`) and ``VARIANT`` (one of those variants). The digest covers the stored body bytes. Anything that does not
check out raises :class:`CorruptRecord`; an unknown version, or an encrypted record
without the key (or the reverse), raises :class:`UnknownRecord`. Both are misses.

:class:`Reader` is the hit path's decoder: it hashes the stored record on every read, and
reuses the entry it decoded before when the record is byte-for-byte the same, so a read
costs one hash instead of a parse and a copy of the body. Its memo also keeps the
generation stamp read before the record (:mod:`fic_middleware.generations`), with which
most hits need no read at all (:meth:`fic_middleware.core.ImageCache.hit`).
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from typing import Any

from xxhash import xxh3_64_intdigest

from .generations import slot_of

MAGIC = b"FIC"
VERSION = 4  # 2: the header checksum covers the storage key; 3: stale windows, cache_control;
# 4: replayed origin headers, Vary: Accept variants
_HEADER = struct.Struct("<3sBBddddQIHI")
_CRC_AT = _HEADER.size - 4
_SEP = b"\0"
NEGATIVE = 1
ENCRYPTED = 2
NO_CACHE = 4
MUST_REVALIDATE = 8
VARIES = 16
VARIANT = 32
_NONCE_BYTES = 12


class CorruptRecord(Exception):
    """Stored bytes that fail their checks; the entry must be deleted and refetched."""


class UnknownRecord(CorruptRecord):
    """A record written by another format version: a miss, replaced on the next store."""


class Entry:
    """One cached image, decoded from a record."""

    __slots__ = ("body", "content_type", "etag", "last_modified", "origin_etag",
                 "stored_at", "expires_at", "stale_until", "error_until", "cache_control",
                 "flags", "negative", "headers", "response_memo")

    def __init__(self, body: bytes, content_type: str, etag: str, last_modified: str | None,
                 origin_etag: str | None, stored_at: float, expires_at: float,
                 flags: int = 0, *, stale_until: float | None = None,
                 error_until: float | None = None, cache_control: str | None = None,
                 headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.flags = flags  # NEGATIVE, NO_CACHE, MUST_REVALIDATE, VARIES, VARIANT
        self.negative = bool(flags & NEGATIVE)  # the origin said the image does not exist
        self.body = body
        self.content_type = content_type
        self.etag = etag
        self.last_modified = last_modified
        self.origin_etag = origin_etag
        self.stored_at = stored_at
        self.expires_at = expires_at
        # Without stale windows, an entry is never served stale.
        self.stale_until = expires_at if stale_until is None else stale_until
        self.error_until = expires_at if error_until is None else error_until
        self.cache_control = cache_control  # the origin's, for a 304 that omits it
        self.headers = headers  # the origin's headers replayed to clients (pass_headers)
        # (second, response) of the last hit response built for this entry (responses.hit_response).
        self.response_memo: tuple[int, Any] | None = None


def strong_etag(body: bytes) -> str:
    """Our ETag: a digest of the bytes we serve (origin ETags are kept only to revalidate)."""
    return f'"{xxh3_64_intdigest(body):016x}"'


class Sealer:
    """AES-256-GCM for stored bodies (``encryption_key``); needs the ``cryptography`` extra."""

    def __init__(self, secret: str) -> None:
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        # The secret may be any string: a fixed-purpose hash turns it into a 256-bit key.
        self._aead = AESGCM(hashlib.sha256(b"fic-middleware-record-v1\0" + secret.encode()).digest())

    def seal(self, key: bytes, body: bytes) -> bytes:
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, body, key)

    def open(self, key: bytes, stored: bytes | memoryview) -> bytes:
        from cryptography.exceptions import InvalidTag

        try:
            return self._aead.decrypt(bytes(stored[:_NONCE_BYTES]), bytes(stored[_NONCE_BYTES:]), key)
        except InvalidTag:
            raise CorruptRecord("body does not decrypt") from None


def encode(entry: Entry, key: bytes = b"", sealer: Sealer | None = None) -> bytes:
    """The record for ``entry``; with a sealer the body is encrypted, bound to ``key``."""
    meta = _SEP.join((entry.content_type.encode("latin-1"), entry.etag.encode("latin-1"),
                      (entry.last_modified or "").encode("latin-1"),
                      (entry.origin_etag or "").encode("latin-1"),
                      (entry.cache_control or "").encode("latin-1"),
                      "\n".join(f"{name}:{value}" for name, value in entry.headers)
                      .encode("latin-1")))
    flags = entry.flags & ~ENCRYPTED
    body = entry.body
    if sealer is not None:
        flags |= ENCRYPTED
        body = sealer.seal(key, body)
    header = _HEADER.pack(MAGIC, VERSION, flags, entry.stored_at, entry.expires_at,
                          entry.stale_until, entry.error_until,
                          xxh3_64_intdigest(body), len(body), len(meta), 0)
    crc = zlib.crc32(meta, zlib.crc32(memoryview(header)[:_CRC_AT], zlib.crc32(key)))
    return b"".join((header[:_CRC_AT], crc.to_bytes(4, "little"), meta, body))


def decode(buf: bytes | memoryview, key: bytes = b"", sealer: Sealer | None = None) -> Entry:
    """Check and decode a record; the body is copied out, so ``buf`` may be a transient view."""
    if len(buf) < _HEADER.size:
        raise CorruptRecord("short record")
    magic, version, flags, stored_at, expires_at, stale_until, error_until, digest, body_len, \
        meta_len, crc = _HEADER.unpack_from(buf)
    if magic != MAGIC:
        raise CorruptRecord("bad magic")
    if version != VERSION:
        raise UnknownRecord(f"record version {version}")
    body_at = _HEADER.size + meta_len
    if len(buf) != body_at + body_len:
        raise CorruptRecord("length mismatch")
    view = memoryview(buf)
    meta = view[_HEADER.size:body_at]
    if zlib.crc32(meta, zlib.crc32(view[:_CRC_AT], zlib.crc32(key))) != crc:
        raise CorruptRecord("header checksum mismatch")
    stored = view[body_at:]
    if xxh3_64_intdigest(stored) != digest:
        raise CorruptRecord("body digest mismatch")
    if bool(flags & ENCRYPTED) != (sealer is not None):
        raise UnknownRecord("encryption setting differs from the record's")
    body = sealer.open(key, stored) if sealer is not None else bytes(stored)
    fields = bytes(meta).decode("latin-1").split("\0")
    if len(fields) != 6:
        raise CorruptRecord("bad metadata")
    content_type, etag, last_modified, origin_etag, cache_control, lines = fields
    headers = tuple((name, value) for name, _, value in
                    (line.partition(":") for line in lines.split("\n"))) if lines else ()
    return Entry(body, content_type, etag, last_modified or None, origin_etag or None,
                 stored_at, expires_at, flags & ~ENCRYPTED, stale_until=stale_until,
                 error_until=error_until, cache_control=cache_control or None,
                 headers=headers)


class Reader:
    """Decodes records, reusing the entry decoded before while its record is unchanged.

    The memo maps a storage key to the entry decoded from it and the xxh3 digest of the
    whole record: a read whose record hashes the same is byte-for-byte the record that was
    checked, so it is answered with one hash instead of a parse and a copy of the body.
    Any change (rewrite, damage) falls through to :func:`decode`. Bounded by ``max_bytes``
    of bodies per process; when full it is emptied and refills with what is hot.

    ``hot`` is the memo itself: key -> (record digest, entry, generation slot, stamp), the
    stamp being the slot's value read before the record was (:meth:`mark`), -1 (never a
    slot's value) until then.
    """

    def __init__(self, max_bytes: int, sealer: Sealer | None = None) -> None:
        self.max_bytes = max_bytes
        self.sealer = sealer
        self.hot: dict[bytes, tuple[int, Entry, int, int]] = {}
        self._bytes = 0

    @property
    def memo_bytes(self) -> int:
        """Bytes of bodies held by the memo now (at most ``max_bytes``)."""
        return self._bytes

    def memo_entries(self) -> int:
        return len(self.hot)

    def decode(self, key: bytes, buf: bytes | memoryview) -> Entry:
        # Fast path: the record this process decoded last time for this key.
        found = self.hot.get(key)
        digest = xxh3_64_intdigest(buf)
        if found is not None and found[0] == digest:
            return found[1]
        entry = decode(buf, key, self.sealer)
        size = len(entry.body)
        if size <= self.max_bytes:
            if found is not None:
                self._bytes -= len(found[1].body)
            if self._bytes + size > self.max_bytes:
                self.hot.clear()
                self._bytes = 0
            self.hot[key] = (digest, entry, 0, -1)
            self._bytes += size
        return entry

    def mark(self, key: bytes, entry: Entry, stamp: int) -> None:
        """``entry`` was read from the image store after its generation slot read ``stamp``."""
        found = self.hot.get(key)
        if found is not None and found[1] is entry:
            self.hot[key] = (found[0], entry, slot_of(key), stamp)
