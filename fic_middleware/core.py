"""The cache: hit, stale, miss, revalidate, store, purge. No WSGI, no urllib3: a storage and a
fetcher.

One fetch per key at a time (:mod:`locking`): other requests for it wait and are served
what the leader stored. Freshness and the stale windows follow RFC 9111 and RFC 5861 within
the operator's bounds (:mod:`freshness`): past its lifetime an entry is served while one
background fetch revalidates it (until ``stale_until``), and when the origin is unreachable,
times out or answers 500/502/503/504 (until ``error_until``). An origin's 4xx is its answer:
the stored copy is dropped. An origin's 404/410 is remembered for ``negative_ttl`` seconds,
in a store of its own, so that requests for missing images never evict real ones.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from . import http
from .breaker import Breaker
from .config import Config
from .errors import (
    NotFound, OriginDown, OriginRefused, OriginTimeout, OriginUnavailable, RequestError,
)
from .fetch import Fetched, Fetcher
from .freshness import Policy
from .imagetypes import SNIFF_BYTES, sniff
from .limits import InflightLimiter, MissLimiter
from .locking import HostLocks, Lock, LockChain, ProcessOnly, SingleFlight
from .metrics import Stats
from .purgelog import PurgeLog
from .redis_tier import RedisTier
from .record import (
    MUST_REVALIDATE, NEGATIVE, NO_CACHE, CorruptRecord, Entry, Reader, Sealer, UnknownRecord, encode,
    strong_etag,
)
from .routing import ImageRequest
from .storage import Storage

log = logging.getLogger("fic_middleware")
_READER_MEMO_BYTES = 64 * 1024 * 1024
_REFRESH_THREADS = 4


class ImageCache:
    """Answers an :class:`ImageRequest` with a response carrying its RFC 9211 Cache-Status."""

    def __init__(self, config: Config, storage: Storage, fetcher: Fetcher,
                 negatives: Storage, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.storage = storage
        self.negatives = negatives  # remembered 404/410s, with a budget of their own
        self.policy = Policy(config.default_ttl, config.min_ttl, config.max_ttl,
                             config.stale_while_revalidate, config.stale_if_error)
        self.fetcher = fetcher
        self.clock = clock
        self.sealer = Sealer(config.encryption_key) if config.encryption_key else None
        # Decoded hot entries per process: at most an eighth of the budget, 64 MiB.
        self.reader = Reader(min(config.max_bytes // 8, _READER_MEMO_BYTES), self.sealer)
        self.stats = Stats(os.path.join(config.cache_dir, "stats")
                           if config.backend == "lmdb" and config.cache_dir else None)
        self.inflight = InflightLimiter(config.max_inflight_fetches)
        self.miss_limiter = (MissLimiter(config.miss_rate, config.miss_burst,
                                         ipv4_prefix=config.client_ipv4_prefix,
                                         ipv6_prefix=config.client_ipv6_prefix)
                             if config.miss_rate is not None else None)
        self.flights = SingleFlight()
        # Shared by the host's workers; a probe may take as long as a whole fetch.
        self.breaker = Breaker(os.path.join(config.cache_dir, "breaker")
                               if config.backend == "lmdb" and config.cache_dir else None,
                               config.breaker_failures, config.breaker_cooldown,
                               probe_lease=config.total_timeout + 1)
        self.locks: Lock = (HostLocks(os.path.join(config.cache_dir, "fic.lock"))
                            if config.backend == "lmdb" and config.cache_dir else ProcessOnly())
        self.shared: RedisTier | None = None
        if config.redis_url:
            # A host that died mid-fetch holds its Redis lock until this runs out.
            self.shared = RedisTier(config.redis_url, config.redis_auth_key,
                                    lock_ttl=config.total_timeout + 5,
                                    on_failure=self.stats.redis_failed)
            self.locks = LockChain(self.locks, self.shared)
        # Purges reach the other hosts' L1 through a Redis stream (purgelog.py).
        self.purges = PurgeLog(config.redis_url, config.cache_dir, self._forget_here,
                               self._forget_all_here, on_failure=self.stats.redis_failed
                               ) if config.redis_url else None
        self._refreshing: set[bytes] = set()
        self._refresh_lock = threading.Lock()
        self._refresher: ThreadPoolExecutor | None = None
        # Bound once: the hit path runs in a few microseconds, attribute chains show.
        self._get = storage.get
        self._decode = self.reader.decode
        self._client_max_age = config.client_max_age

    def respond(self, request: ImageRequest, client: str | None = None) -> http.Response:
        """The image response for ``request``; raises RequestError for the error statuses.
        ``client`` (an address) is charged for the request if it goes to the origin;
        None charges no one."""
        try:
            entry = self._get(request.key, self._decode)
        except Exception as exc:
            self._unreadable(request.key, exc)
            entry = None
        now = self.clock()
        # Fast path: a fresh hit, no write, no logging.
        if entry is not None and now < entry.expires_at:
            self.stats.hit += 1
            if entry.negative:
                return http.NEGATIVE_HIT
            return http.hit_response(entry, now, self._client_max_age)
        if entry is None:
            negative = self._negative(request.key)
            if negative is not None and now < negative.expires_at:
                self.stats.hit += 1
                return http.NEGATIVE_HIT
        if entry is None and self.shared is not None:
            entry = self._from_shared(request.key)
            if entry is not None and now < entry.expires_at:
                self.stats.hit += 1
                if entry.negative:
                    return http.NEGATIVE_HIT
                return http.image_response(entry, http.SHARED_HIT, now, self._client_max_age)
        if entry is not None and not entry.negative and now < entry.stale_until:
            self.stats.result("stale")
            self._refresh_later(request, entry)
            return http.image_response(entry, http.STALE_HIT, now, 0)
        return self._fetch(request, entry, client)

    @property
    def corrupt_records(self) -> int:
        return self.stats.corrupt

    def _unreadable(self, key: bytes, exc: Exception, storage: Storage | None = None) -> None:
        """A read that failed is a miss; a corrupt record is also deleted and counted."""
        if isinstance(exc, UnknownRecord):  # another release's format: replaced on store
            return
        if isinstance(exc, CorruptRecord):
            self.stats.corrupt += 1
            log.warning("dropping a corrupt cache record (%s)", exc)
            self._delete(key, storage)
        else:  # the storage failing must not fail the request: fetch instead
            log.error("cache read failed", exc_info=exc)

    def _fetch(self, request: ImageRequest, stale: Entry | None, client: str | None
               ) -> http.Response:
        """Fetch once per key in this process; the other threads wait for the leader."""
        if self.miss_limiter is not None and client is not None:
            self.miss_limiter.take(client)
        if stale is not None and stale.negative:
            stale = None
        key = request.key
        flight, leader = self.flights.join(key)
        if not leader:
            flight.done.wait(self.config.lock_timeout)
            collapsed = self._collapsed(key)
            if collapsed is not None:
                return collapsed
            if flight.error is not None:
                raise flight.error
            return self._fetch_locked(request, stale)  # the leader's answer was not stored
        try:
            response = self._fetch_locked(request, stale)
        except BaseException as exc:
            self.flights.land(key, flight, exc)
            raise
        self.flights.land(key, flight)
        return response

    def _fetch_locked(self, request: ImageRequest, stale: Entry | None) -> http.Response:
        """Fetch once per key on this host: wait for another process's fetch if there is one
        (it is served as soon as it is stored), take over if its process dies."""
        key = request.key
        if not self.locks.acquire(key, self.config.lock_timeout,
                                  lambda: self._collapsed(key) is not None):
            collapsed = self._collapsed(key)
            if collapsed is not None:
                return collapsed
            log.warning("waited lock_timeout for another fetch of %s; fetching", request.url)
            return self._fetch_origin(request, stale)
        try:
            # Another process may have stored it between our look and our lock.
            collapsed = self._collapsed(key)
            if collapsed is not None:
                return collapsed
            return self._fetch_origin(request, stale)
        finally:
            self.locks.release(key)

    def _collapsed(self, key: bytes) -> http.Response | None:
        """The answer for a request that waited on another's fetch, if that one stored."""
        try:
            entry = self._get(key, self._decode)
        except Exception:
            return None
        if entry is None:
            entry = self._negative(key)
        if entry is None and self.shared is not None:
            entry = self._from_shared(key)
        now = self.clock()
        if entry is None or now >= entry.expires_at:
            return None
        self.stats.result("collapsed")
        if entry.negative:
            return http.NEGATIVE_HIT
        return http.image_response(entry, http.COLLAPSED, now, self._client_max_age)

    def _fetch_origin(self, request: ImageRequest, stale: Entry | None) -> http.Response:
        started = time.monotonic()
        try:
            with self.breaker.guard(request.url), self.inflight.slot():
                fetched = self.fetcher.fetch(request.url, request.headers, _validators(stale))
        except NotFound:
            self._remember_gone(request.key)
            raise
        except OriginRefused as exc:
            if stale is not None:
                log.debug("origin refused (%s); dropping the stored copy", exc)
                self._delete_everywhere(request.key)
            raise
        except (OriginUnavailable, OriginTimeout) as exc:
            # RFC 5861 §4: only a failing origin is bridged; a must-revalidate entry never.
            now = self.clock()
            if stale is not None and now < stale.error_until:
                log.debug("origin failed (%s); serving stale", exc)
                self.stats.result("stale")
                status = http.ORIGIN_DOWN if isinstance(exc, OriginDown) else http.STALE_IF_ERROR
                return http.image_response(stale, status, now, 0)
            raise
        self.stats.fetched(request.origin, time.monotonic() - started, len(fetched.body))
        self.stats.result("miss")
        return self._stored(request, fetched, stale)

    def _stored(self, request: ImageRequest, fetched: Fetched, stale: Entry | None
                ) -> http.Response:
        """Store what the origin sent (unless it forbids it) and answer with it."""
        now = self.clock()
        revalidated = fetched.status == 304 and stale is not None
        if revalidated:
            # RFC 9111 §4.3.4: same body; the 304's headers update the stored ones.
            log.debug("revalidated %s", request.url)
            assert stale is not None
            entry = self._entry(stale.body, stale.content_type, fetched, now, stale)
        else:
            entry = self._entry(fetched.body, fetched.content_type, fetched, now, None)
        # Age sent to clients counts the time spent upstream too (RFC 9111 §5.1).
        entry.stored_at = now - fetched.age
        freshness = self.policy.freshness(entry.cache_control, fetched.expires, fetched.date,
                                          fetched.age, now)
        forwarded = "stale" if stale is not None else "miss"
        if freshness is None:
            log.debug("not stored: origin forbids it (%s)", fetched.cache_control)
            if revalidated:
                self._delete_everywhere(request.key)
            return http.image_response(entry, f"fic; fwd={forwarded}", now, 0, cacheable=False)
        entry.expires_at = now + freshness.lifetime
        entry.stale_until = entry.expires_at + freshness.stale_while_revalidate
        entry.error_until = entry.expires_at + freshness.stale_if_error
        entry.flags = (NO_CACHE if freshness.no_cache else 0) | \
            (MUST_REVALIDATE if freshness.must_revalidate else 0)
        stored = self._store(request.key, entry)
        if stored and stale is None:
            self._forget_gone(request.key)
        status = f"fic; fwd={forwarded}; stored" if stored else f"fic; fwd={forwarded}"
        return http.image_response(entry, status, now, self._client_max_age)

    def _refresh_later(self, request: ImageRequest, stale: Entry) -> None:
        """One background refresh per key and process, while the stale entry is served."""
        with self._refresh_lock:
            if request.key in self._refreshing:
                return
            self._refreshing.add(request.key)
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(_REFRESH_THREADS, "fic-refresh")
            self._refresher.submit(self._refresh, request, stale)

    def _refresh(self, request: ImageRequest, stale: Entry) -> None:
        try:
            self._fetch(request, stale, None)  # a refresh is charged to no client
        except RequestError as exc:
            log.debug("background refresh failed: %s", exc)
        except Exception:
            log.exception("background refresh failed")
        finally:
            with self._refresh_lock:
                self._refreshing.discard(request.key)

    def _remember_gone(self, key: bytes) -> None:
        """Negative caching: the origin's 404/410 answers for ``negative_ttl`` seconds.
        Kept in the negative store (its own budget); the image it replaces is dropped."""
        self._delete_everywhere(key)
        if self.config.negative_ttl <= 0:
            return
        now = self.clock()
        entry = Entry(b"", "", "", None, None, now, now + self.config.negative_ttl, NEGATIVE)
        record = encode(entry, key, self.sealer)
        if self.shared is not None:
            self.shared.put(key, record, self.config.negative_ttl)
        self._put_l1(key, record, entry.expires_at, self.negatives)

    def _negative(self, key: bytes) -> Entry | None:
        """A remembered 404/410 for ``key``, if any (asked only when there is no image)."""
        try:
            return self.negatives.get(key, self._decode)
        except Exception as exc:
            self._unreadable(key, exc, self.negatives)
            return None

    def _forget_gone(self, key: bytes) -> None:
        """The image exists again: drop its remembered 404 (a read first, so the common
        case, no such record, writes nothing)."""
        if self._negative(key) is not None:
            self._delete(key, self.negatives)

    @staticmethod
    def _entry(body: bytes, content_type: str, fetched: Fetched, now: float,
               stale: Entry | None) -> Entry:
        last_modified = fetched.last_modified or (stale.last_modified if stale else None)
        origin_etag = fetched.etag or (stale.origin_etag if stale else None)
        cache_control = fetched.cache_control or (stale.cache_control if stale else None)
        etag = stale.etag if stale is not None else strong_etag(body)
        return Entry(body, content_type, etag, last_modified, origin_etag, now, now,
                     cache_control=cache_control)

    def _from_shared(self, key: bytes) -> Entry | None:
        """An entry from the Redis tier, checked like any record and kept in L1 too."""
        assert self.shared is not None
        try:
            record = self.shared.get(key)
            if record is None:
                return None
            entry = self.reader.decode(key, record)
            if not entry.negative and not self._acceptable(entry):
                raise CorruptRecord("not an allowed image of its type")
        except CorruptRecord as exc:
            self.stats.corrupt += 1
            log.warning("dropping a corrupt record from the redis tier (%s)", exc)
            self.shared.delete(key)
            return None
        self._put_l1(key, record, entry.expires_at, self.negatives if entry.negative else None)
        return entry

    def _acceptable(self, entry: Entry) -> bool:
        """What came over the network from another host passes the checks a fetch does."""
        return entry.content_type in self.config.allowed_types and \
            sniff(entry.content_type, entry.body[:SNIFF_BYTES])

    def _store(self, key: bytes, entry: Entry) -> bool:
        record = encode(entry, key, self.sealer)
        if self.shared is not None:
            # Kept as long as it may still be served stale.
            keep = max(entry.stale_until, entry.error_until) - self.clock()
            self.shared.put(key, record, keep)
        return self._put_l1(key, record, entry.expires_at)

    def _put_l1(self, key: bytes, record: bytes, expires_at: float,
                storage: Storage | None = None) -> bool:
        try:
            stored = (storage or self.storage).put(key, record, expires_at)
        except Exception:  # serve what we fetched even if the disk says no
            log.exception("cache write failed")
            return False
        if not stored:
            log.debug("not stored: over the cache budget")
        return stored

    def _delete(self, key: bytes, storage: Storage | None = None) -> bool:
        try:
            return (storage or self.storage).delete(key)
        except Exception:
            log.exception("cache delete failed")
            return False

    def _delete_everywhere(self, key: bytes) -> bool:
        """Drop ``key`` from this host (images and remembered 404s) and the shared tier."""
        if self.shared is not None:
            self.shared.delete(key)
        return self._delete(key) | self._delete(key, self.negatives)

    def purge(self, keys: list[bytes]) -> int:
        """Forget these entries, here, in the shared tier and (soon) on the other hosts;
        how many this host had."""
        purged = sum(self._delete_everywhere(key) for key in keys)
        if self.purges is not None:  # after Redis: no host may refill its L1 from there
            self.purges.publish(keys)
        return purged

    def purge_all(self) -> int:
        if self.shared is not None:
            self.shared.clear()
        purged = self._forget_all_here()
        if self.purges is not None:
            self.purges.publish_all()
        return purged

    def _forget_here(self, keys: list[bytes]) -> None:
        """Another host's purge: this host's L1 only (that host cleared Redis)."""
        for key in keys:
            self._delete(key)
            self._delete(key, self.negatives)

    def _forget_all_here(self) -> int:
        return self.storage.clear() + self.negatives.clear()

    def close(self) -> None:
        if self.purges is not None:
            self.purges.close()
        if self._refresher is not None:
            self._refresher.shutdown(wait=True)
            self._refresher = None
        self.locks.close()  # the Redis tier too, when it is in the chain
        self.breaker.close()
        self.stats.stop()


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
