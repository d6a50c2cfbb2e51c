"""From a path under the prefix to an :class:`ImageRequest` (target URL + cache key). Pure.

``/o/{origin}/{path}`` names ``{origins[origin]}/{path}``. The path arrives decoded (WSGI
PATH_INFO); traversal (``..``, ``.``), backslashes, NUL and control characters are refused,
and so are encoded slashes, seen in the raw request URI where the server provides one
(gunicorn's RAW_URI, REQUEST_URI elsewhere), and double-encoded dots/slashes.

``/r/{sig}/{b64url}`` names the signed absolute URL (see :mod:`signing`): the signature is
checked before the URL is even parsed; then scheme and ``allowed_hosts``.

An origin that answers ``Vary: Accept`` gets one entry per Accept class of its clients
(:func:`accept_class`), under :func:`variant_key`; the origin is sent the class's fixed Accept
(:data:`ACCEPTS`), never the client's own header, so the class names everything it saw.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from .config import Config
from .errors import BadRequest, Forbidden, NotFound
from .signing import MAX_URL_BYTES, b64decode, verify
from .urls import canonical_url, host_allowed, normalize_query, quote_wsgi_path

KEY_BYTES = 16
# Routes are pure functions of their input: remember the last few thousand (hot images
# repeat), so a hit does not re-validate and re-hash its path. Cleared when full.
_MEMO_SIZE = 4096
_BAD_CHARS = re.compile(r"[\\\x00-\x1f\x7f]")
_ENCODED_SEP = re.compile(r"%(2f|5c|00)", re.I)
_DOUBLE_ENCODED = re.compile(r"%(2e|2f|5c|00)", re.I)


# The Accept sent to origins for each class of client (the most capable class first).
ACCEPTS = {
    "avif": "image/avif,image/webp,image/*;q=0.8",
    "webp": "image/webp,image/*;q=0.8",
    "other": "image/*",
}


def accept_class(accept: str) -> str:
    """The class of a client's Accept: ``avif``, ``webp`` or ``other``. A substring test, not
    a parse: a client that names image/avif (even with q=0, which no browser sends) is
    taken to accept it."""
    if "image/avif" in accept:
        return "avif"
    if "image/webp" in accept:
        return "webp"
    return "other"


class ImageRequest:
    """What to fetch and where to keep it. From the router, ``accept_class`` is ``""`` and
    ``key`` the URL's own key (``base``); :meth:`classed` gives the request of one class, of
    the URL itself or of its variant."""

    __slots__ = ("url", "key", "headers", "origin", "accept_class", "base")

    def __init__(self, url: str, key: bytes, headers: Mapping[str, str], origin: str,
                 accept_class: str = "", base: bytes | None = None) -> None:
        self.url = url
        self.key = key
        self.headers = headers
        self.origin = origin  # the mapped origin's name, or "remote": a label for metrics
        self.accept_class = accept_class
        self.base = key if base is None else base  # the URL's key, for a variant too

    @property
    def accept(self) -> str:
        """The Accept sent to the origin for this request."""
        return ACCEPTS[self.accept_class or "other"]

    def classed(self, accept_class: str, variant: bool) -> ImageRequest:
        """The request of one Accept class, for the URL's own key or its class's variant."""
        key = variant_key(self.base, accept_class) if variant else self.base
        return ImageRequest(self.url, key, self.headers, self.origin, accept_class, self.base)


def variant_key(key: bytes, accept_class: str) -> bytes:
    """The key of the ``accept_class`` variant of the entry stored under ``key``."""
    return hashlib.blake2b(key + accept_class.encode(), digest_size=KEY_BYTES,
                           person=b"fic-variant-v1").digest()


def with_variants(keys: list[bytes]) -> list[bytes]:
    """``keys`` and the keys of their variants (what a purge removes)."""
    return keys + [variant_key(key, name) for key in keys for name in ACCEPTS]


def cache_key(url: str, header_identity: bytes = b"") -> bytes:
    """Fixed-length key: user input never becomes an LMDB key or a file name directly."""
    h = hashlib.blake2b(url.encode("utf-8"), digest_size=KEY_BYTES, person=b"fic-key-v1")
    h.update(b"\n" + header_identity)
    return h.digest()


def _header_identity(headers: Mapping[str, str]) -> bytes:
    """A digest of an origin's request headers: entries fetched with other credentials
    (or none) never answer for these, and the secret itself is not in the key material."""
    if not headers:
        return b""
    text = "\n".join(f"{k.lower()}:{v}" for k, v in sorted(headers.items()))
    return hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()


class Router:
    def __init__(self, config: Config) -> None:
        self.origins = {
            name: (base, config.origin_headers.get(name, {}),
                   _header_identity(config.origin_headers.get(name, {})))
            for name, base in config.origins.items()
        }
        self.signing_keys = config.verify_keys
        self.allowed_hosts = config.allowed_hosts
        self._memo: dict[str | tuple[str, str], ImageRequest] = {}

    def route(self, path: str, query: str = "", raw_uri: str | None = None) -> ImageRequest:
        """``path`` is PATH_INFO after the prefix; ``query`` the raw QUERY_STRING to
        forward ('' unless forward_query); ``raw_uri`` the undecoded request URI if known."""
        if raw_uri and "%" in raw_uri and _ENCODED_SEP.search(raw_uri.partition("?")[0]):
            raise BadRequest("encoded slashes, backslashes and NUL are not allowed in the path")
        memo_key: str | tuple[str, str] = (path, query) if query else path
        # Fast path: a recently seen path.
        found = self._memo.get(memo_key)
        if found is not None:
            return found
        found = self._route(path, query)
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[memo_key] = found
        return found

    def _route(self, path: str, query: str) -> ImageRequest:
        mode, _, rest = path[1:].partition("/")
        if mode == "r":
            return self._remote(rest)
        if mode != "o":
            raise NotFound("not found")
        name, sep, image_path = rest.partition("/")
        origin = self.origins.get(name)
        if origin is None:
            raise NotFound("unknown origin")
        if not sep or not image_path:
            raise BadRequest("missing image path")
        if _BAD_CHARS.search(image_path) or _DOUBLE_ENCODED.search(image_path):
            raise BadRequest("invalid characters in the image path")
        if any(segment in (".", "..") for segment in image_path.split("/")):
            raise BadRequest("path traversal is not allowed")
        base, headers, identity = origin
        try:
            url = f"{base}/{quote_wsgi_path(image_path)}"
        except UnicodeEncodeError:  # not a WSGI path (PEP 3333: latin-1 only)
            raise BadRequest("invalid characters in the image path") from None
        if query:
            url = f"{url}?{normalize_query(query)}"
        return ImageRequest(url, cache_key(url, identity), headers, name)

    def keys_for_url(self, url: str) -> list[bytes]:
        """Every key an absolute origin URL may be stored under: as a remote URL, and as a
        path of each mapped origin whose base it is under (with that origin's headers)."""
        canonical = canonical_url(url)
        keys = [cache_key(canonical)]
        for base, _headers, identity in self.origins.values():
            if canonical.startswith(base + "/") and identity:
                keys.append(cache_key(canonical, identity))
        return keys

    def _remote(self, rest: str) -> ImageRequest:
        if not self.signing_keys:
            raise NotFound("remote URLs are not enabled")
        sig_text, sep, url_text = rest.partition("/")
        if not sep or not sig_text or not url_text or "/" in url_text:
            raise BadRequest("malformed signed URL")
        try:
            sig, raw = b64decode(sig_text), b64decode(url_text)
        except ValueError:
            raise BadRequest("bad base64 in signed URL") from None
        if len(raw) > MAX_URL_BYTES:
            raise BadRequest("URL too long")
        if not verify(raw, sig, self.signing_keys):
            raise Forbidden("bad signature")
        try:
            text = raw.decode("utf-8")
            scheme = urlsplit(text).scheme.lower()
        except ValueError:
            raise BadRequest("bad URL") from None
        if scheme not in ("http", "https"):
            raise (Forbidden("scheme not allowed") if scheme else BadRequest("bad URL"))
        try:
            url = canonical_url(text)
        except ValueError:
            raise BadRequest("bad URL") from None
        if self.allowed_hosts and not host_allowed(urlsplit(url).hostname or "", self.allowed_hosts):
            raise Forbidden("host not allowed")
        return ImageRequest(url, cache_key(url), {}, "remote")

