"""Abuse limits on the miss path: a token bucket of misses per client address, and a cap
on origin fetches in flight. Both are per process (each gunicorn worker has its own)."""

from __future__ import annotations

import contextlib
import ipaddress
import math
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence

from .errors import Overloaded, TooManyRequests

# Buckets kept at most; past this, the full (idle) ones are dropped.
_MAX_CLIENTS = 100_000
# (IP version, the address's network bits) or, for a peer that is no address, its text.
_Bucket = str | tuple[int, int]


class MissLimiter:
    """Token bucket per client: ``burst`` misses at once, refilled at ``rate`` per second.

    A client is its network, not its exact address: an IPv6 host picks its own interface id
    and may rotate it at will (RFC 8981), so by default an IPv6 client is its /64 (the subnet
    of one link, RFC 4291 §2.5.4) and an IPv4 client its /32. IPv4-mapped IPv6 addresses (a
    dual-stack socket's view of IPv4 peers) count as IPv4; a peer that is not an address
    (a unix socket) is bucketed as itself.
    """

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic, *,
                 ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.clock = clock
        self._ipv4_shift = 32 - ipv4_prefix
        self._ipv6_shift = 128 - ipv6_prefix
        self._buckets: dict[_Bucket, tuple[float, float]] = {}  # bucket -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one miss of ``client``'s bucket or raise TooManyRequests with a Retry-After."""
        bucket = self._bucket(client)
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(bucket, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[bucket] = (tokens, now)
                wait = (1 - tokens) / self.rate if self.rate > 0 else 3600
                raise TooManyRequests("too many new images requested; slow down",
                                      retry_after=max(1, math.ceil(wait)))
            self._buckets[bucket] = (tokens - 1, now)
            if len(self._buckets) > _MAX_CLIENTS:
                self._prune(now)

    def _bucket(self, client: str) -> _Bucket:
        # inet_pton, not ipaddress.ip_address: a tenth of the cost on the path a flood takes.
        family = socket.AF_INET6 if ":" in client else socket.AF_INET
        try:
            packed = socket.inet_pton(family, client.partition("%")[0])  # no IPv6 zone id
        except (OSError, ValueError):
            return client
        number = int.from_bytes(packed, "big")
        if family == socket.AF_INET6:
            if number >> 32 != 0xFFFF:
                return 6, number >> self._ipv6_shift
            number &= 0xFFFFFFFF  # ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) is an IPv4 peer
        return 4, number >> self._ipv4_shift

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
