"""Fetching an image from its origin: one pooled, verifying urllib3 client per process.

Redirects are followed here, hop by hop, so each hop is checked again (scheme, downgrade,
``allowed_hosts``, address policy through :mod:`netguard`). The body is read raw and
decoded here, so the size cap and the deadline hold on the bytes read from the socket as
well as on the decoded bytes; then the Content-Type allowlist and magic bytes. Origin
headers that are kept (Last-Modified, ETag, the ``pass_headers``) are validated before they
are. The Accept sent is the client's Accept class (:mod:`routing`), and ``Vary`` is read so
that :mod:`core` stores one variant per class, or nothing. Every urllib3
error is translated at one choke point, :func:`_origin_errors`.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
import warnings
import zlib
from collections.abc import Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import (
    HTTPError, InsecureRequestWarning, LocationParseError, MaxRetryError, NameResolutionError,
    NewConnectionError, ProtocolError, SSLError,
)
from urllib3 import HTTPHeaderDict
from urllib3.response import BaseHTTPResponse
from urllib3.util import Retry, Timeout
from werkzeug.http import http_date, parse_date

from .config import Config
from .errors import (
    BadRequest, Forbidden, NotFound, OriginError, OriginRefused, OriginTimeout, OriginUnavailable,
)
from .imagetypes import SNIFF_BYTES, canonical_type, sniff
from . import forks, netguard
from .netguard import AddressPolicy, ForbiddenAddress, Resolver, guarded_pool_classes, system_resolver
from .urls import canonical_url, host_allowed

log = logging.getLogger("fic_middleware")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GONE = frozenset({404, 410})
# Statuses that say the origin is failing, not that the image is gone: retried, and bridged
# by a stale copy (RFC 5861 §4 names 500, 502, 503 and 504).
_UNAVAILABLE = frozenset({500, 502, 503, 504})
# 4xx that say "not now" rather than "not this image": not bridged, but the copy is kept.
_TRANSIENT_4XX = frozenset({408, 429})
_CHUNK = 64 * 1024
# Content-Encodings :class:`_Decoder` decodes; any other would be stored as if it were the image.
_GZIP = frozenset({"gzip", "x-gzip"})  # RFC 9110 §8.4.1.3: x-gzip is gzip
_COMPRESSED = frozenset({"deflate", *_GZIP})
_DECODABLE = frozenset({"", "identity", *_COMPRESSED})
_USER_AGENT = "fic-middleware"
# RFC 9110 §8.8.3 entity-tag, limited to visible ASCII (obs-text is dropped too).
_ETAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e]*"')
# A replayed origin header: one line of RFC 9110 §5.5 field-value (tab, visible ASCII,
# latin-1 obs-text; no control character, C1 controls included), at most 1 KiB each and
# 4 KiB in all (what a record keeps; the rest is dropped).
_FIELD_VALUE = re.compile(r"[\t\x20-\x7e\xa0-\xff]*")
_MAX_PASSED_VALUE = 1024
_MAX_PASSED = 4096


class Fetched:
    """An origin's answer that passed every check (or a 304 to a revalidation)."""

    __slots__ = ("status", "body", "content_type", "cache_control", "expires", "date",
                 "last_modified", "etag", "age", "headers", "vary")

    def __init__(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str],
                 passed: tuple[tuple[str, str], ...] = ()):
        self.status = status
        self.body = body
        self.content_type = content_type  # canonical, and in allowed_types
        # Read for freshness only (werkzeug's parsers in http.py); never stored or replayed.
        self.cache_control: str | None = headers.get("Cache-Control")
        self.expires: str | None = headers.get("Expires")
        self.date: str | None = headers.get("Date")
        # Stored, then sent to clients (Last-Modified) or back to the origin (ETag): only in a
        # valid form, so no control or non-ASCII character ever reaches a record or a header.
        self.last_modified = _http_date(headers.get("Last-Modified"))
        etag = headers.get("ETag", "").strip(" \t")
        self.etag = etag if _ETAG.fullmatch(etag) else None
        # RFC 9111 §5.1: the first member of a list; anything but 1*DIGIT is ignored.
        age = _digits(headers.get("Age", "").partition(",")[0])
        self.age = float(age) if age is not None else 0.0  # seconds spent in caches upstream
        self.headers = passed  # the pass_headers sent, checked (_passed)
        self.vary = _vary(headers.get("Vary"))


def _vary(value: str | None) -> str:
    """``""`` (no Vary), ``"accept"`` (exactly ``Vary: Accept``) or ``"other"`` (anything
    else, ``*`` included: RFC 9111 §4.1, such a response is not stored)."""
    if value is None:
        return ""
    fields = {field.strip(" \t").lower() for field in value.split(",")} - {""}
    if not fields:
        return ""
    return "accept" if fields == {"accept"} else "other"


def _passed(headers: HTTPHeaderDict, names: frozenset[str]) -> tuple[tuple[str, str], ...]:
    """The origin's headers among ``names`` that may be replayed: not named by its Connection
    header (RFC 9110 §7.6.1), one valid line, Content-Disposition only ``inline`` (an
    attachment would turn every view of the image into a download)."""
    if not names:
        return ()
    hop = {name.strip(" \t").lower() for name in headers.get("Connection", "").split(",")}
    passed = []
    total = 0
    for name, value in headers.items():
        lower = name.lower()
        if lower not in names or lower in hop:
            continue
        value = value.strip(" \t")
        if len(value) > _MAX_PASSED_VALUE or not _FIELD_VALUE.fullmatch(value):
            log.debug("origin header %s dropped: not one line of text", name)
            continue
        if lower == "content-disposition" and \
                value.lower().partition(";")[0].strip(" \t") != "inline":
            continue
        total += len(name) + len(value) + 1
        if total > _MAX_PASSED:
            log.debug("origin headers beyond %d bytes dropped", _MAX_PASSED)
            break
        passed.append((name, value))
    return tuple(passed)


def _digits(text: str) -> int | None:
    """``1*DIGIT`` in ASCII, with optional whitespace around it (str.isdigit() alone also
    says yes to '²', which int() then refuses)."""
    text = text.strip(" \t")
    return int(text) if text.isascii() and text.isdigit() else None


def _http_date(value: str | None) -> str | None:
    """``value`` re-formatted as an IMF-fixdate (RFC 9110 §5.6.7), None if it is no date."""
    parsed = parse_date(value) if value else None
    return http_date(parsed) if parsed is not None else None


def _content_length(value: str | None) -> int | None:
    """The declared length, None if there is none. RFC 9110 §8.6: a list of one repeated
    value is that value; anything else invalid makes the framing unknowable (RFC 9112 §6.3)."""
    if value is None:
        return None
    lengths = {_digits(part) for part in value.split(",")}
    if len(lengths) != 1 or None in lengths:
        raise OriginError("origin sent an invalid Content-Length")
    return lengths.pop()


class _Decoder:
    """Decodes a gzip or deflate body (RFC 9110 §8.4.1) one raw read at a time.

    urllib3 decodes inside ``read1()`` and reads on until the decoder yields output, so a
    body that never does (an endless gzip comment, empty deflate blocks) would never come
    back to the size and deadline checks; fed here, every raw read does. Output is bounded
    by ``room``, so a decompression bomb stops at the cap instead of being expanded.
    """

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding in _GZIP
        # deflate: zlib (RFC 1950) as specified, or raw deflate (RFC 1951) as some servers
        # send; which one is known from the first two bytes.
        self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS) if self._gzip else None
        self._head = b""
        self._members = 0
        self._done = False  # gzip: what follows a complete member is not gzip; ignored

    def feed(self, data: bytes, room: int) -> bytes:
        """The output of ``data``; OriginError if it exceeds ``room`` bytes."""
        obj = self._obj
        if obj is None:
            data = self._head + data
            if len(data) < 2:
                self._head = data
                return b""
            # RFC 1950 §2.2: CM 8 (deflate), and CMF*256 + FLG a multiple of 31.
            is_zlib = data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
            obj = self._obj = zlib.decompressobj(zlib.MAX_WBITS if is_zlib else -zlib.MAX_WBITS)
        out = b""
        while data and not self._done:
            if obj.eof:
                if not self._gzip:
                    break  # nothing follows a deflate stream
                # RFC 1952 §2.2: a gzip body may be several members, one after the other.
                obj = self._obj = zlib.decompressobj(16 + zlib.MAX_WBITS)
                self._members += 1
            try:
                out += obj.decompress(data, room + 1 - len(out))
            except zlib.error as exc:
                if not self._members:
                    raise OriginError("origin body could not be decoded") from exc
                self._done = True  # trailing garbage after a member, as gzip(1) allows
                break
            if len(out) > room:
                raise OriginError("image is larger than max_image_bytes")
            data = obj.unused_data if obj.eof else b""
        return out

    def finish(self) -> None:
        """The body ended: it must have ended a complete stream (no truncated image)."""
        if not self._done and (self._obj is None or not self._obj.eof):
            raise OriginError("origin body could not be decoded")


@contextlib.contextmanager
def _origin_errors() -> Iterator[None]:
    """Map urllib3's exceptions to the contract's statuses, without internal detail.

    Order matters: urllib3's NewConnectionError subclasses its ConnectTimeoutError.
    """
    try:
        yield
    except MaxRetryError as exc:
        if exc.reason is None:
            raise OriginUnavailable("origin failed") from exc
        with _origin_errors():
            raise exc.reason from exc
    except ForbiddenAddress as exc:
        raise Forbidden("target address not allowed") from exc
    except NameResolutionError as exc:
        raise OriginUnavailable("origin host could not be resolved") from exc
    except NewConnectionError as exc:
        raise OriginUnavailable("origin could not be reached") from exc
    except (urllib3.exceptions.TimeoutError, TimeoutError) as exc:
        raise OriginTimeout("origin timed out") from exc
    except SSLError as exc:
        raise OriginUnavailable("TLS connection to the origin failed") from exc
    except LocationParseError as exc:
        raise BadRequest("bad URL") from exc
    except (ProtocolError, HTTPError, OSError) as exc:
        raise OriginUnavailable("origin connection failed") from exc


class Fetcher:
    """GETs images. The PoolManager is created lazily, once per process (fork-safe)."""

    def __init__(self, config: Config, resolver: Resolver = system_resolver) -> None:
        self.config = config
        self._pool_classes = guarded_pool_classes(AddressPolicy(config.allowed_networks), resolver)
        # urllib3 retries connect errors. Statuses are retried in _fetch with the same
        # backoff: urllib3 would first drain the retried answer's body, beyond our size cap
        # and deadline (an endless 503 body would hold the worker).
        self._retry = Retry(
            total=config.retries, connect=config.retries, read=0, other=0, redirect=0, status=0,
            backoff_factor=0.1, backoff_jitter=0.1, respect_retry_after_header=False,
            raise_on_redirect=False, raise_on_status=False,
        )
        self._status_retry = Retry(
            total=config.retries, status_forcelist=(502, 503, 504), allowed_methods=("GET",),
            backoff_factor=0.1, backoff_jitter=0.1, respect_retry_after_header=False,
        )
        if not config.verify_tls:
            # An explicit operator choice: say it once here, not per request.
            log.warning("verify_tls is off: origin certificates are not checked")
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        # CORS is answered by cors_origins when it is set (middleware), not by the origin.
        self._pass = frozenset(name.lower() for name in config.pass_headers) - (
            {"access-control-allow-origin"} if config.cors_origins else set())
        self._pool: urllib3.PoolManager | None = None
        self._lock = threading.Lock()
        forks.register(self)

    def after_fork(self) -> None:
        # Sockets must not be shared with the parent: the child makes its own pool.
        self._pool = None
        self._lock = threading.Lock()

    def _manager(self) -> urllib3.PoolManager:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = self._new_manager()
                pool = self._pool
        return pool

    def _new_manager(self) -> urllib3.PoolManager:
        cfg = self.config
        manager = urllib3.PoolManager(
            num_pools=64, maxsize=8, block=False,
            cert_reqs="CERT_REQUIRED" if cfg.verify_tls else "CERT_NONE",
            ca_certs=(cfg.ca_bundle or certifi.where()) if cfg.verify_tls else None)
        # urllib3's documented seam: per-instance pool classes (here, with our ConnectionCls).
        manager.pool_classes_by_scheme = self._pool_classes
        return manager

    def fetch(self, url: str, headers: Mapping[str, str] | None = None,
              validators: Mapping[str, str] | None = None, accept: str = "image/*") -> Fetched:
        """GET ``url``; ``headers`` go to its origin only (never to a redirect's other host);
        ``validators`` (If-None-Match...) make a 304 a valid answer; ``accept`` is the
        client's Accept class's (never the client's own header)."""
        forks.check()
        deadline = time.monotonic() + self.config.total_timeout
        netguard.deadline.at = deadline
        try:
            return self._fetch(url, headers, validators, accept, deadline)
        except OriginError:
            if time.monotonic() >= deadline:  # cut by the deadline, however it showed
                raise OriginTimeout("origin timed out") from None
            raise
        finally:
            netguard.deadline.at = None

    def _fetch(self, url: str, headers: Mapping[str, str] | None,
               validators: Mapping[str, str] | None, accept: str, deadline: float) -> Fetched:
        cfg = self.config
        origin = _origin_of(url)
        start_host = origin[1]
        status_retry = self._status_retry
        hops = 0
        while True:
            request_headers = {"User-Agent": _USER_AGENT, "Accept": accept}
            if _origin_of(url) == origin:
                request_headers.update(headers or {})
                request_headers.update(validators or {})
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise OriginTimeout("origin timed out")
            timeout = Timeout(connect=min(cfg.connect_timeout, remaining),
                              read=min(cfg.read_timeout, remaining))
            with _origin_errors():
                response = self._manager().urlopen(
                    "GET", url, headers=request_headers, redirect=False, retries=self._retry,
                    preload_content=False, timeout=timeout, decode_content=False)
            try:
                if status_retry.is_retry("GET", response.status):
                    try:
                        status_retry = status_retry.increment("GET", url, response=response)
                    except MaxRetryError:
                        pass  # retries used up: this answer stands
                    else:
                        response.close()  # not drained: its body could be endless
                        time.sleep(min(status_retry.get_backoff_time(),
                                       max(0.0, deadline - time.monotonic())))
                        continue
                if response.status in _REDIRECTS:
                    hops += 1
                    if hops > cfg.max_redirects:
                        raise OriginError("origin redirected too many times")
                    url = _next_hop(url, response.headers.get("Location"))
                    response.close()  # its body is not worth reading
                    # Every hop, not just the first URL: an open redirect on an allowed host
                    # must not lead elsewhere. A mapped origin's own host needs no listing.
                    host = urlsplit(url).hostname
                    if cfg.allowed_hosts and host != start_host and \
                            not host_allowed(host or "", cfg.allowed_hosts):
                        raise Forbidden("host not allowed")
                    continue
                return self._read(response, validators is not None, deadline)
            except BaseException:
                # Unread body: the connection cannot be reused (and draining could be huge).
                response.close()
                raise
            finally:
                response.release_conn()

    def _read(self, response: BaseHTTPResponse, revalidating: bool, deadline: float) -> Fetched:
        cfg = self.config
        status = response.status
        if status == 304 and revalidating:
            return Fetched(304, b"", "", response.headers, _passed(response.headers, self._pass))
        if status in _GONE:
            raise NotFound("image not found at origin")
        if status != 200:
            if status in _UNAVAILABLE:
                raise OriginUnavailable(f"origin answered {status}")
            if 400 <= status < 500 and status not in _TRANSIENT_4XX:
                raise OriginRefused(f"origin answered {status}")
            raise OriginError(f"origin answered {status}")
        content_type = canonical_type(response.headers.get("Content-Type", ""))
        if content_type not in cfg.allowed_types:
            raise OriginError("origin response is not an allowed image type")
        encoding = response.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in _DECODABLE:
            raise OriginError("origin used an unsupported Content-Encoding")
        length = _content_length(response.headers.get("Content-Length"))
        if length is not None and length > cfg.max_image_bytes:
            raise OriginError("image is larger than max_image_bytes")
        body = self._stream(response, _Decoder(encoding) if encoding in _COMPRESSED else None,
                            deadline)
        if not sniff(content_type, body[:SNIFF_BYTES]):
            raise OriginError("origin response is not a valid image of its type")
        return Fetched(200, body, content_type, response.headers,
                       _passed(response.headers, self._pass))

    def _stream(self, response: BaseHTTPResponse, decoder: _Decoder | None,
                deadline: float) -> bytes:
        """Read the body, enforcing max_image_bytes (on the bytes read and on the decoded
        bytes) and total_timeout after every read from the socket."""
        limit = self.config.max_image_bytes
        chunks = []
        read = size = 0
        with _origin_errors():
            while True:
                chunk = response.read1(_CHUNK, decode_content=False)
                if not chunk:
                    break
                read += len(chunk)
                if read > limit:
                    raise OriginError("image is larger than max_image_bytes")
                if decoder is not None:
                    chunk = decoder.feed(chunk, limit - size)
                size += len(chunk)
                if size > limit:
                    raise OriginError("image is larger than max_image_bytes")
                chunks.append(chunk)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OriginTimeout("origin timed out")
                _set_read_timeout(response, min(self.config.read_timeout, remaining))
        if decoder is not None:
            decoder.finish()
        return b"".join(chunks)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.clear()
        self._pool = None


def _set_read_timeout(response: BaseHTTPResponse, seconds: float) -> None:
    """Shorten the socket timeout so a slow-drip origin is cut at total_timeout."""
    sock = getattr(getattr(response, "connection", None), "sock", None)
    if sock is not None:
        sock.settimeout(seconds)


def _origin_of(url: str) -> tuple[str, str | None, int | None]:
    parts = urlsplit(url)
    return parts.scheme, parts.hostname, parts.port


def _next_hop(url: str, location: str | None) -> str:
    if not location:
        raise OriginError("origin sent a redirect without a location")
    try:
        target = canonical_url(urljoin(url, location.strip()))
    except ValueError:
        raise Forbidden("origin redirected to a URL that is not allowed") from None
    if url.startswith("https:") and target.startswith("http:"):
        raise Forbidden("origin redirected from https to http")
    return target
