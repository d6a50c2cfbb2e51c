"""Fetching an image from its origin: one pooled, verifying urllib3 client per process.

Redirects are followed here, hop by hop, so each hop is checked again (scheme, downgrade,
address policy through :mod:`netguard`). The body is streamed and checked as it arrives:
size cap on the bytes actually read, Content-Type allowlist, magic bytes. Every urllib3
error is translated at one choke point, :func:`_origin_errors`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from urllib.parse import urljoin, urlsplit

import certifi
import urllib3
from urllib3.exceptions import (
    DecodeError, HTTPError, InsecureRequestWarning, LocationParseError, MaxRetryError, NameResolutionError,
    NewConnectionError, ProtocolError, SSLError,
)
from urllib3.response import BaseHTTPResponse
from urllib3.util import Retry, Timeout

from .config import Config
from .errors import (
    BadRequest, Forbidden, NotFound, OriginError, OriginRefused, OriginTimeout, OriginUnavailable,
)
from .imagetypes import SNIFF_BYTES, canonical_type, sniff
from . import netguard
from .netguard import AddressPolicy, ForbiddenAddress, Resolver, guarded_pool_classes, system_resolver
from .urls import canonical_url

log = logging.getLogger("fic_middleware")

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_GONE = frozenset({404, 410})
# Statuses that say the origin is failing, not that the image is gone: retried, and bridged
# by a stale copy (RFC 5861 §4 names 500, 502, 503 and 504).
_UNAVAILABLE = frozenset({500, 502, 503, 504})
# 4xx that say "not now" rather than "not this image": not bridged, but the copy is kept.
_TRANSIENT_4XX = frozenset({408, 429})
_CHUNK = 64 * 1024
# Content-Encodings urllib3 decodes; any other would be stored as if it were the image.
_DECODABLE = frozenset({"", "identity", *urllib3.response.HTTPResponse.CONTENT_DECODERS})
_USER_AGENT = "fic-middleware"


class Fetched:
    """An origin's answer that passed every check (or a 304 to a revalidation)."""

    __slots__ = ("status", "body", "content_type", "cache_control", "expires", "date",
                 "last_modified", "etag", "age")

    def __init__(self, status: int, body: bytes, content_type: str, headers: Mapping[str, str]):
        self.status = status
        self.body = body
        self.content_type = content_type
        self.cache_control: str | None = headers.get("Cache-Control")
        self.expires: str | None = headers.get("Expires")
        self.date: str | None = headers.get("Date")
        self.last_modified: str | None = headers.get("Last-Modified")
        self.etag: str | None = headers.get("ETag")
        age = headers.get("Age", "").strip()
        self.age = float(age) if age.isdigit() else 0.0  # seconds spent in caches upstream


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
    except DecodeError as exc:
        raise OriginError("origin body could not be decoded") from exc
    except LocationParseError as exc:
        raise BadRequest("bad URL") from exc
    except (ProtocolError, HTTPError, OSError) as exc:
        raise OriginUnavailable("origin connection failed") from exc


class Fetcher:
    """GETs images. The PoolManager is created lazily, once per process (fork-safe)."""

    def __init__(self, config: Config, resolver: Resolver = system_resolver) -> None:
        self.config = config
        self._pool_classes = guarded_pool_classes(AddressPolicy(config.allowed_networks), resolver)
        self._retry = Retry(
            total=config.retries, connect=config.retries, read=0, other=0, redirect=0,
            status=config.retries, status_forcelist=(502, 503, 504), allowed_methods=("GET",),
            backoff_factor=0.1, backoff_jitter=0.1, respect_retry_after_header=False,
            raise_on_redirect=False, raise_on_status=False,
        )
        if not config.verify_tls:
            # An explicit operator choice: say it once here, not per request.
            log.warning("verify_tls is off: origin certificates are not checked")
            warnings.filterwarnings("ignore", category=InsecureRequestWarning)
        self._pool: urllib3.PoolManager | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def _manager(self) -> urllib3.PoolManager:
        # Sockets must not be shared with the parent after fork(): one manager per pid.
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._pool = self._new_manager()
                    self._pid = os.getpid()
        assert self._pool is not None
        return self._pool

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
              validators: Mapping[str, str] | None = None) -> Fetched:
        """GET ``url``; ``headers`` go to its origin only (never to a redirect's other host);
        ``validators`` (If-None-Match...) make a 304 a valid answer."""
        deadline = time.monotonic() + self.config.total_timeout
        netguard.deadline.at = deadline
        try:
            return self._fetch(url, headers, validators, deadline)
        except OriginError:
            if time.monotonic() >= deadline:  # cut by the deadline, however it showed
                raise OriginTimeout("origin timed out") from None
            raise
        finally:
            netguard.deadline.at = None

    def _fetch(self, url: str, headers: Mapping[str, str] | None,
               validators: Mapping[str, str] | None, deadline: float) -> Fetched:
        cfg = self.config
        origin = _origin_of(url)
        for _hop in range(cfg.max_redirects + 1):
            request_headers = {"User-Agent": _USER_AGENT, "Accept": "image/*"}
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
                    preload_content=False, timeout=timeout, decode_content=True)
            try:
                if response.status in _REDIRECTS:
                    url = _next_hop(url, response.headers.get("Location"))
                    response.close()  # its body is not worth reading
                    continue
                return self._read(response, validators is not None, deadline)
            except BaseException:
                # Unread body: the connection cannot be reused (and draining could be huge).
                response.close()
                raise
            finally:
                response.release_conn()
        raise OriginError("origin redirected too many times")

    def _read(self, response: BaseHTTPResponse, revalidating: bool, deadline: float) -> Fetched:
        cfg = self.config
        status = response.status
        if status == 304 and revalidating:
            return Fetched(304, b"", "", response.headers)
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
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > cfg.max_image_bytes and encoding in ("", "identity"):
            raise OriginError("image is larger than max_image_bytes")
        body = self._stream(response, deadline)
        if not sniff(content_type, body[:SNIFF_BYTES]):
            raise OriginError("origin response is not a valid image of its type")
        return Fetched(200, body, content_type, response.headers)

    def _stream(self, response: BaseHTTPResponse, deadline: float) -> bytes:
        """Read the (decoded) body, enforcing max_image_bytes and total_timeout as it comes."""
        limit = self.config.max_image_bytes
        chunks = []
        size = 0
        with _origin_errors():
            while True:
                chunk = response.read1(_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > limit:
                    raise OriginError("image is larger than max_image_bytes")
                chunks.append(chunk)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise OriginTimeout("origin timed out")
                _set_read_timeout(response, min(self.config.read_timeout, remaining))
        return b"".join(chunks)

    def close(self) -> None:
        if self._pool is not None and self._pid == os.getpid():
            self._pool.clear()
        self._pool = None
        self._pid = 0


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
