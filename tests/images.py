"""Small real images for the test origin, generated (nothing binary in the repo)."""

from __future__ import annotations

import functools
import hashlib
import struct
import zlib


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@functools.lru_cache(maxsize=256)
def png(name: str, size: int = 16) -> bytes:
    """A valid size x size RGB PNG whose colour depends on ``name``."""
    r, g, b = hashlib.blake2b(name.encode(), digest_size=3).digest()
    row = b"\0" + bytes((r, g, b)) * size
    return (b"\x89PNG\r\n\x1a\n"
            + _chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0))
            + _chunk(b"IDAT", zlib.compress(row * size))
            + _chunk(b"IEND", b""))


def jpeg() -> bytes:
    """JPEG signature and JFIF header (enough for the magic-byte check)."""
    return b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00" + b"\0" * 64 + b"\xff\xd9"


def gif() -> bytes:
    return b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
