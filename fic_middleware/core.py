"""The cache: hit, miss, refetch, store. No WSGI, no urllib3: a storage and a fetcher."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from . import http
from .config import Config
from .fetch import Fetched, Fetcher
from .limits import InflightLimiter, MissLimiter
from .record import CorruptRecord, Entry, Reader, UnknownRecord, encode, strong_etag
from .routing import ImageRequest
from .storage import Storage

log = logging.getLogger("fic_middleware")
_READER_MEMO_BYTES = 64 * 1024 * 1024


class ImageCache:
    """Answers an :class:`ImageRequest` with an entry and its RFC 9211 Cache-Status."""

    def __init__(self, config: Config, storage: Storage, fetcher: Fetcher,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.storage = storage
        self.fetcher = fetcher
        self.clock = clock
        # Decoded hot entries per process: at most an eighth of the budget, 64 MiB.
        self.reader = Reader(min(config.max_bytes // 8, _READER_MEMO_BYTES))
        self.corrupt_records = 0
        self.inflight = InflightLimiter(config.max_inflight_fetches)
        self.miss_limiter = (MissLimiter(config.miss_rate, config.miss_burst)
                             if config.miss_rate is not None else None)
        # Bound once: the hit path runs in a few microseconds, attribute chains show.
        self._get = storage.get
        self._decode = self.reader.decode
        self._client_max_age = config.client_max_age

    def respond(self, request: ImageRequest, client: str = "") -> http.Response:
        """The image response for ``request``; raises RequestError for the error statuses.
        ``client`` (an address) is charged for the request if it goes to the origin."""
        try:
            entry = self._get(request.key, self._decode)
        except Exception as exc:
            self._unreadable(request.key, exc)
            entry = None
        now = self.clock()
        # Fast path: a fresh hit, no write, no logging.
        if entry is not None and now < entry.expires_at:
            return http.hit_response(entry, now, self._client_max_age)
        return self._fetch(request, entry, client)

    def _unreadable(self, key: bytes, exc: Exception) -> None:
        """A read that failed is a miss; a corrupt record is also deleted and counted."""
        if isinstance(exc, UnknownRecord):  # another release's format: replaced on store
            return
        if isinstance(exc, CorruptRecord):
            self.corrupt_records += 1
            log.warning("dropping a corrupt cache record (%s)", exc)
            self._delete(key)
        else:  # the storage failing must not fail the request: fetch instead
            log.error("cache read failed", exc_info=exc)

    def _fetch(self, request: ImageRequest, stale: Entry | None, client: str) -> http.Response:
        if self.miss_limiter is not None:
            self.miss_limiter.take(client)
        with self.inflight.slot():
            fetched = self.fetcher.fetch(request.url, request.headers, _validators(stale))
        now = self.clock()
        if fetched.status == 304 and stale is not None:
            # Revalidated: same body, new freshness from the 304's headers.
            log.debug("revalidated %s", request.url)
            entry = self._entry(stale.body, stale.content_type, fetched, now, stale)
        else:
            entry = self._entry(fetched.body, fetched.content_type, fetched, now, None)
        lifetime = http.freshness_lifetime(fetched.cache_control, fetched.expires, fetched.date,
                                           self.config.default_ttl, now)
        forwarded = "stale" if stale is not None else "miss"
        if lifetime is None:
            log.debug("not stored: origin forbids it (%s)", fetched.cache_control)
            return http.image_response(entry, f"fic; fwd={forwarded}", now, 0, cacheable=False)
        entry.expires_at = now + http.clamp(lifetime, self.config.min_ttl, self.config.max_ttl)
        stored = self._store(request.key, entry)
        status = f"fic; fwd={forwarded}; stored" if stored else f"fic; fwd={forwarded}"
        return http.image_response(entry, status, now, self.config.client_max_age)

    @staticmethod
    def _entry(body: bytes, content_type: str, fetched: Fetched, now: float,
               stale: Entry | None) -> Entry:
        last_modified = fetched.last_modified or (stale.last_modified if stale else None)
        origin_etag = fetched.etag or (stale.origin_etag if stale else None)
        etag = stale.etag if stale is not None else strong_etag(body)
        return Entry(body, content_type, etag, last_modified, origin_etag, now, now)

    def _store(self, key: bytes, entry: Entry) -> bool:
        try:
            stored = self.storage.put(key, encode(entry), entry.expires_at)
        except Exception:  # serve what we fetched even if the disk says no
            log.exception("cache write failed")
            return False
        if not stored:
            log.debug("not stored: larger than the cache budget")
        return stored

    def _delete(self, key: bytes) -> None:
        try:
            self.storage.delete(key)
        except Exception:
            log.exception("cache delete failed")


def _validators(stale: Entry | None) -> dict[str, str] | None:
    """Conditional headers to revalidate a stale entry with its origin (RFC 9111 §4.3.1)."""
    if stale is None:
        return None
    validators = {}
    if stale.origin_etag:
        validators["If-None-Match"] = stale.origin_etag
    if stale.last_modified:
        validators["If-Modified-Since"] = stale.last_modified
    return validators or None
