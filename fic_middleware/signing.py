"""Signed remote URLs: ``{prefix}/r/{sig}/{b64url}``.

``b64url`` is the unpadded base64url of the absolute URL's bytes and ``sig`` the unpadded
base64url of ``HMAC-SHA256(key, url bytes)``. The first configured key signs; every key
verifies (rotation). Verification is constant-time and happens before the URL is parsed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Sequence

_B64URL = re.compile(r"[A-Za-z0-9_-]*")
# A URL longer than this is refused before any work (browsers and servers cap near 8 KiB).
MAX_URL_BYTES = 4096


def _key_bytes(key: str | bytes) -> bytes:
    return key.encode("utf-8") if isinstance(key, str) else key


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64decode(text: str) -> bytes:
    """Strict unpadded base64url: anything else raises ValueError."""
    if not _B64URL.fullmatch(text) or len(text) % 4 == 1:
        raise ValueError("not unpadded base64url")
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError("not unpadded base64url") from exc
    if b64encode(data) != text:  # unused trailing bits set: one value, two spellings
        raise ValueError("not canonical base64url")
    return data


def signature(url: bytes, key: str | bytes) -> bytes:
    return hmac.new(_key_bytes(key), url, hashlib.sha256).digest()


def sign_url(url: str, key: str | bytes, prefix: str = "/_fic") -> str:
    """The path under which fic_middleware serves ``url`` (an absolute http(s) URL).

    >>> sign_url("https://example.com/cat.png", "k")
    '/_fic/r/YkSByA89ZMytmbj6MTs6DwwnhVt9Fw6CLjTCPie_QAM/aHR0cHM6Ly9leGFtcGxlLmNvbS9jYXQucG5n'
    """
    raw = url.encode("utf-8")
    return f"{prefix.rstrip('/')}/r/{b64encode(signature(raw, key))}/{b64encode(raw)}"


def verify(url: bytes, sig: bytes, keys: Sequence[str | bytes]) -> bool:
    """True if ``sig`` is the signature of ``url`` under any of ``keys`` (constant time)."""
    valid = False
    for key in keys:  # no early exit: the time taken does not say which key matched
        valid |= hmac.compare_digest(signature(url, key), sig)
    return valid
