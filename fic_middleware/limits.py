"""Abuse limits on the miss path: a token bucket of misses per client address, and a cap
on origin fetches in flight. Both are per process (each gunicorn worker has its own)."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from .errors import Overloaded, TooManyRequests

# Buckets kept at most; past this, the full (idle) ones are dropped.
_MAX_CLIENTS = 100_000


class MissLimiter:
    """Token bucket per client: ``burst`` misses at once, refilled at ``rate`` per second."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one miss for ``client`` or raise TooManyRequests with a Retry-After."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(client, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[client] = (tokens, now)
                wait = (1 - tokens) / self.rate if self.rate > 0 else 3600
                raise TooManyRequests("too many new images requested; slow down",
                                      retry_after=max(1, math.ceil(wait)))
            self._buckets[client] = (tokens - 1, now)
            if len(self._buckets) > _MAX_CLIENTS:
                self._prune(now)

    def _prune(self, now: float) -> None:
        self._buckets = {c: (t, at) for c, (t, at) in self._buckets.items()
                         if t + (now - at) * self.rate < self.burst}


class InflightLimiter:
    """At most ``limit`` origin fetches at once; the next gets 503 at once, not a queue."""

    def __init__(self, limit: int) -> None:
        self._slots = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        if not self._slots.acquire(blocking=False):
            raise Overloaded("too many images are being fetched; try again shortly", retry_after=1)
        try:
            yield
        finally:
            self._slots.release()


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def client_address(remote_addr: str, forwarded_for: str | None,
                   trusted_proxies: Sequence[Network]) -> str:
    """The client's address: REMOTE_ADDR, or, when that is a trusted proxy, the nearest
    X-Forwarded-For hop that is not itself a trusted proxy (the rightmost ones are added
    by our proxies; anything left of them is the client's own claim)."""
    address = remote_addr
    if not trusted_proxies or not forwarded_for or not _trusted(address, trusted_proxies):
        return address
    for hop in reversed(forwarded_for.split(",")):
        hop = hop.strip()
        if not _trusted(hop, trusted_proxies):
            return hop if _is_ip(hop) else address
        address = hop
    return address


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _trusted(address: str, trusted_proxies: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted_proxies)
