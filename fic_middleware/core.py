"""The cache: hit, stale, miss, revalidate, store. No WSGI, no urllib3, no storage of its own:
:class:`~fic_middleware.tiers.Tiers` and a fetcher, wired by :mod:`assembly`.

One fetch per key at a time (:mod:`locking`): other requests for it wait and are served
what the leader stored. Freshness and the stale windows follow RFC 9111 and RFC 5861 within
the operator's bounds (:mod:`freshness`): past its lifetime an entry is served while one
background fetch revalidates it (until ``stale_until``), and when the origin is unreachable,
times out or answers 500/502/503/504 (until ``error_until``). An origin's 4xx is its answer:
the stored copy is dropped. An origin's 404/410 is remembered for ``negative_ttl`` seconds,
in a store of its own, so that requests for missing images never evict real ones.

``Vary`` (RFC 9111 §4.1): an origin that answers ``Vary: Accept`` for a URL gets one entry
per Accept class (:mod:`routing`) and a bodiless marker (``record.VARIES``) under the URL's
own key, so only the requests for such URLs ever look at the client's Accept; any other Vary
is served once and not stored.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from . import responses
from .config import Config
from .breaker import Breaker
from .errors import NotFound, OriginDown, OriginRefused, OriginTimeout, OriginUnavailable, RequestError
from .fetch import Fetched, Fetcher
from .freshness import Policy
from .limits import InflightLimiter, MissLimiter
from .locking import Lock, SingleFlight
from .metrics import Stats
from .record import MUST_REVALIDATE, NEGATIVE, NO_CACHE, VARIANT, VARIES, Entry, strong_etag
from .routing import ImageRequest, accept_class
from .tiers import Tiers

log = logging.getLogger("fic_middleware")
_REFRESH_THREADS = 4
_CLASSED_MEMO = 4096  # requests of one Accept class, kept like the router's routes
_NO_HEADERS: Mapping[str, Any] = {}


class ImageCache:
    """Answers an :class:`ImageRequest` with a response carrying its RFC 9211 Cache-Status.

    Built by :func:`fic_middleware.assembly.build`; where entries live is :class:`Tiers`'s
    business, what to serve and what to store is this class's.
    """

    def __init__(self, config: Config, tiers: Tiers, fetcher: Fetcher, locks: Lock, stats: Stats,
                 inflight: InflightLimiter, miss_limiter: MissLimiter | None, breaker: Breaker,
                 clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.tiers = tiers
        self.policy = Policy(config.default_ttl, config.min_ttl, config.max_ttl,
                             config.stale_while_revalidate, config.stale_if_error)
        self.fetcher = fetcher
        self.locks = locks
        self.stats = stats
        self.inflight = inflight
        self.miss_limiter = miss_limiter
        self.breaker = breaker
        self.clock = clock
        self.flights = SingleFlight()
        self._refreshing: set[bytes] = set()
        self._refresh_lock = threading.Lock()
        self._refresher: ThreadPoolExecutor | None = None
        # Bound once: the hit path runs in a few microseconds, attribute chains show.
        self._get = tiers.storage.get
        self._decode = tiers.reader.decode
        self._hot = tiers.reader.hot
        self._mark = tiers.reader.mark
        self._generations = tiers.storage.generations
        self._shared = tiers.shared is not None
        self._client_max_age = config.client_max_age
        # Prebuilt into every image response (and each hit's per-second response).
        self._extra = tuple(responses.fixed_headers(config.add_headers, config.cors_origins))
        self._classed: dict[tuple[bytes, str, bool], ImageRequest] = {}

    def hit(self, key: bytes) -> responses.Response | None:
        """A fresh hit answered from this process's memo without reading the store, or None
        (then :meth:`respond`). Only while the entry's per-second response is this second's,
        so :meth:`respond` read and hashed its record this second (damage on disk is seen
        within a second), and while no process has changed the key since that read (its
        generation stamp, :mod:`generations`): purges and rewrites are seen at once. The
        eviction policy counts the entry's hits through that read: once a second at most."""
        found = self._hot.get(key)
        if found is None:
            return None
        entry = found[1]
        memo = entry.response_memo
        stamps = self._generations.view
        now = self.clock()
        if memo is None or memo[0] != int(now) or now >= entry.expires_at \
                or stamps is None or stamps[found[2]] != found[3]:
            return None
        self.stats.hit += 1
        response: responses.Response = memo[1]
        return response

    def respond(self, request: ImageRequest, client: str | None = None,
                environ: Mapping[str, Any] = _NO_HEADERS) -> responses.Response:
        """The image response for ``request``; raises RequestError for the error statuses.
        ``client`` (an address) is charged for the request if it goes to the origin; None
        charges nobody (miss_rate off, or a background refresh). ``environ`` is the request's
        (WSGI keys): its ``HTTP_ACCEPT`` is read past a fresh hit only."""
        try:
            stamp = self._generations.stamp(request.key)  # before the read (generations.py)
            entry = self._get(request.key, self._decode)
        except Exception as exc:
            self.tiers.unreadable(request.key, exc)
            entry = None
        now = self.clock()
        # A fresh hit, no write, no logging; the next ones this second take hit().
        if entry is not None and now < entry.expires_at:
            self.stats.hit += 1
            if entry.negative:
                return responses.NEGATIVE_HIT
            self._mark(request.key, entry, stamp)
            return responses.hit_response(entry, now, self._client_max_age, self._extra)
        if not request.accept_class:  # from here on, the request of the client's Accept class
            request = self._class_of(request, accept_class(environ.get("HTTP_ACCEPT", "")), False)
        if entry is None:
            negative = self.tiers.negative(request.key)
            if negative is not None and now < negative.expires_at:
                self.stats.hit += 1
                return responses.NEGATIVE_HIT
        if entry is None and self._shared:
            entry = self.tiers.from_shared(request.key)
            if entry is not None and now < entry.expires_at:
                self.stats.hit += 1
                if entry.negative:
                    return responses.NEGATIVE_HIT
                return responses.image_response(entry, responses.SHARED_HIT, now,
                                                self._client_max_age, extra=self._extra)
        if entry is not None and entry.flags & VARIES:
            # The URL varies on Accept: the client's class has an entry of its own.
            return self.respond(self._class_of(request, request.accept_class, True), client)
        if entry is not None and not entry.negative and now < entry.stale_until:
            self.stats.result("stale")
            self._refresh_later(request, entry)
            return responses.image_response(entry, responses.STALE_HIT, now, 0, extra=self._extra)
        return self._fetch(request, entry, client)

    def _class_of(self, request: ImageRequest, name: str, variant: bool) -> ImageRequest:
        """``request.classed(name, variant)``, remembered (cleared when full)."""
        memo_key = (request.base, name, variant)
        found = self._classed.get(memo_key)
        if found is None:
            if len(self._classed) >= _CLASSED_MEMO:
                self._classed.clear()
            found = self._classed[memo_key] = request.classed(name, variant)
        return found

    def _fetch(self, request: ImageRequest, stale: Entry | None, client: str | None
               ) -> responses.Response:
        """Fetch once per key in this process; the other threads wait for the leader."""
        if self.miss_limiter is not None and client is not None:
            self.miss_limiter.take(client)
        if stale is not None and stale.negative:
            stale = None
        key = request.key
        flight, leader = self.flights.join(key)
        if not leader:
            flight.done.wait(self.config.lock_timeout)
            collapsed = self._collapsed(request)
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

    def _fetch_locked(self, request: ImageRequest, stale: Entry | None) -> responses.Response:
        """Fetch once per key on this host: wait for another process's fetch if there is one
        (it is served as soon as it is stored), take over if its process dies."""
        key = request.key
        if not self.locks.acquire(key, self.config.lock_timeout,
                                  lambda: self._collapsed(request) is not None):
            collapsed = self._collapsed(request)
            if collapsed is not None:
                return collapsed
            log.warning("waited lock_timeout for another fetch of %s; fetching", request.url)
            return self._fetch_origin(request, stale)
        try:
            # Another process may have stored it between our look and our lock.
            collapsed = self._collapsed(request)
            if collapsed is not None:
                return collapsed
            return self._fetch_origin(request, stale)
        finally:
            self.locks.release(key)

    def _collapsed(self, request: ImageRequest) -> responses.Response | None:
        """The answer for a request that waited on another's fetch, if that one stored."""
        key = request.key
        try:
            entry = self._get(key, self._decode)
            if entry is not None and entry.flags & VARIES:  # what it stored is a variant
                key = self._class_of(request, request.accept_class, True).key
                entry = self._get(key, self._decode)
        except Exception:
            return None
        if entry is None:
            entry = self.tiers.negative(key)
        if entry is None and self._shared:
            entry = self.tiers.from_shared(key)
        now = self.clock()
        if entry is None or now >= entry.expires_at:
            return None
        self.stats.result("collapsed")
        if entry.negative:
            return responses.NEGATIVE_HIT
        return responses.image_response(entry, responses.COLLAPSED, now, self._client_max_age,
                                        extra=self._extra)

    def _fetch_origin(self, request: ImageRequest, stale: Entry | None) -> responses.Response:
        started = time.monotonic()
        try:
            # A down origin fails at once, before taking an in-flight slot (breaker.py).
            with self.breaker.guard(request.url), self.inflight.slot():
                fetched = self.fetcher.fetch(request.url, request.headers, _validators(stale),
                                             request.accept)
        except NotFound:
            self._remember_gone(request.key)
            raise
        except OriginRefused as exc:
            if stale is not None:
                log.debug("origin refused (%s); dropping the stored copy", exc)
                self.tiers.delete(request.key)
            raise
        except (OriginUnavailable, OriginTimeout) as exc:
            # RFC 5861 §4: only a failing origin is bridged; a must-revalidate entry never.
            now = self.clock()
            if stale is not None and now < stale.error_until:
                log.debug("origin failed (%s); serving stale", exc)
                self.stats.result("stale")
                status = responses.ORIGIN_DOWN if isinstance(exc, OriginDown) else \
                    responses.STALE_IF_ERROR
                return responses.image_response(stale, status, now, 0, extra=self._extra)
            raise
        self.stats.fetched(request.origin, time.monotonic() - started, len(fetched.body))
        self.stats.result("miss")
        return self._stored(request, fetched, stale)

    def _stored(self, request: ImageRequest, fetched: Fetched, stale: Entry | None
                ) -> responses.Response:
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
        # A 304 answers for the entry it revalidates (RFC 9111 §4.3.4), variant or not.
        vary = ("accept" if stale and stale.flags & VARIANT else "") if revalidated \
            else fetched.vary
        if freshness is None or vary == "other":
            log.debug("not stored: origin forbids it (Cache-Control %s, Vary %s)",
                      fetched.cache_control, vary or "none")
            if revalidated:
                self.tiers.delete(request.key)
            return responses.image_response(entry, f"fic; fwd={forwarded}", now, 0,
                                            cacheable=False, extra=self._extra)
        entry.expires_at = now + freshness.lifetime
        entry.stale_until = entry.expires_at + freshness.stale_while_revalidate
        entry.error_until = entry.expires_at + freshness.stale_if_error
        entry.flags = (NO_CACHE if freshness.no_cache else 0) | \
            (MUST_REVALIDATE if freshness.must_revalidate else 0) | \
            (VARIANT if vary == "accept" else 0)
        # Without Vary, the URL's own key (a variant's origin that stopped varying replaces
        # the marker); with Vary: Accept, the class's variant, and the marker under the URL.
        key = self._class_of(request, request.accept_class, True).key if vary else request.base
        stored = self.tiers.put(key, entry, now)
        if stored and vary:
            self.tiers.put(request.base, Entry(b"", "", "", None, None, now, now, VARIES,
                                               stale_until=entry.stale_until,
                                               error_until=entry.error_until), now)
        if stored and stale is None:
            self.tiers.forget_negative(request.base)
        status = f"fic; fwd={forwarded}; stored" if stored else f"fic; fwd={forwarded}"
        return responses.image_response(entry, status, now, self._client_max_age,
                                        extra=self._extra)

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
            self._fetch(request, stale, None)  # charged to no client
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
        self.tiers.delete(key)
        if self.config.negative_ttl <= 0:
            return
        now = self.clock()
        self.tiers.put(key, Entry(b"", "", "", None, None, now, now + self.config.negative_ttl,
                                  NEGATIVE), now)

    @staticmethod
    def _entry(body: bytes, content_type: str, fetched: Fetched, now: float,
               stale: Entry | None) -> Entry:
        last_modified = fetched.last_modified or (stale.last_modified if stale else None)
        origin_etag = fetched.etag or (stale.origin_etag if stale else None)
        cache_control = fetched.cache_control or (stale.cache_control if stale else None)
        etag = stale.etag if stale is not None else strong_etag(body)
        headers = fetched.headers
        if stale is not None:
            # RFC 9111 §3.2: a header the 304 sends replaces the stored one of that name.
            sent = {name.lower() for name, _ in fetched.headers}
            headers = tuple(h for h in stale.headers if h[0].lower() not in sent) + headers
        return Entry(body, content_type, etag, last_modified, origin_etag, now, now,
                     cache_control=cache_control, headers=headers)

    def close(self) -> None:
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
