"""Abuse limits on the miss path: a token bucket of misses per client network, and a cap
on origin fetches in flight.

Where the state lives decides what a limit means: per process (the memory backend), per
host (the cache directory's files, shared by every worker: :mod:`hostlimits`), or, for the
miss buckets with ``redis_url``, per cluster (a bucket in Redis, the host's when Redis
fails). The in-flight cap is per host at most: it protects this host's sockets and memory.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

from .errors import Overloaded, TooManyRequests
from .hostlimits import bucket_table, slot_file

if TYPE_CHECKING:
    from .config import Config
    from .redis_tier import RedisTier

log = logging.getLogger("fic_middleware")

# Buckets kept at most per process; past this, the full (idle) ones are dropped.
_MAX_CLIENTS = 100_000
# Retry-After when no token will ever come back (miss_rate 0), and at most.
_RETRY_MAX = 3600


def miss_limiter(config: Config, shared: RedisTier | None) -> MissLimiter | None:
    """The miss limiter ``config`` asks for: cluster-wide with a Redis tier, else host-wide
    with a cache directory, else per process; None without ``miss_rate``."""
    if config.miss_rate is None:
        return None
    rate, burst = config.miss_rate, config.miss_burst
    v4, v6 = config.client_ipv4_prefix, config.client_ipv6_prefix
    directory = _host_directory(config)
    limiter = (HostMissLimiter(os.path.join(directory, "limits"), rate, burst,
                               ipv4_prefix=v4, ipv6_prefix=v6) if directory
               else MissLimiter(rate, burst, ipv4_prefix=v4, ipv6_prefix=v6))
    if shared is not None:
        return ClusterMissLimiter(shared, limiter)
    return limiter


def inflight_limiter(config: Config) -> InflightLimiter:
    """The in-flight cap: host-wide with a cache directory, else per process."""
    directory = _host_directory(config)
    if directory:
        return HostInflightLimiter(os.path.join(directory, "inflight"),
                                   config.max_inflight_fetches)
    return InflightLimiter(config.max_inflight_fetches)


def _host_directory(config: Config) -> str | None:
    return config.cache_dir if config.backend == "lmdb" and config.cache_dir else None


class MissLimiter:
    """Token bucket per client: ``burst`` misses at once, refilled at ``rate`` per second.
    This one keeps its buckets in the process.

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
        self._buckets: dict[bytes, tuple[float, float]] = {}  # bucket -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str) -> None:
        """Spend one miss of ``client``'s bucket or raise TooManyRequests with a Retry-After."""
        wait = self._spend(self.bucket(client))
        if wait > 0:
            raise TooManyRequests("too many new images requested; slow down",
                                  retry_after=max(1, math.ceil(min(wait, _RETRY_MAX))))

    def _spend(self, bucket: bytes) -> float:
        """Take a token from ``bucket``: 0.0, or the seconds until one is back."""
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(bucket, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1:
                self._buckets[bucket] = (tokens, now)
                return (1 - tokens) / self.rate if self.rate > 0 else _RETRY_MAX
            self._buckets[bucket] = (tokens - 1, now)
            if len(self._buckets) > _MAX_CLIENTS:
                self._prune(now)
        return 0.0

    def bucket(self, client: str) -> bytes:
        """The bucket of ``client``: its IP version and network bits, or its own text."""
        # inet_pton, not ipaddress.ip_address: a tenth of the cost on the path a flood takes.
        family = socket.AF_INET6 if ":" in client else socket.AF_INET
        try:
            packed = socket.inet_pton(family, client.partition("%")[0])  # no IPv6 zone id
        except (OSError, ValueError):
            return b"\0" + client.encode("utf-8", "surrogatepass")
        number = int.from_bytes(packed, "big")
        if family == socket.AF_INET6:
            if number >> 32 != 0xFFFF:
                return b"\6" + (number >> self._ipv6_shift).to_bytes(16, "big")
            number &= 0xFFFFFFFF  # ::ffff:a.b.c.d (RFC 4291 §2.5.5.2) is an IPv4 peer
        return b"\4" + (number >> self._ipv4_shift).to_bytes(4, "big")

    def _prune(self, now: float) -> None:
        self._buckets = {c: (t, at) for c, (t, at) in self._buckets.items()
                         if t + (now - at) * self.rate < self.burst}


class HostMissLimiter(MissLimiter):
    """The buckets of every process of this host, in the table at ``path``.
    ``clock`` must be one for all of them: time.monotonic() is."""

    def __init__(self, path: str, rate: float, burst: int,
                 clock: Callable[[], float] = time.monotonic, *,
                 ipv4_prefix: int = 32, ipv6_prefix: int = 64) -> None:
        super().__init__(rate, burst, clock, ipv4_prefix=ipv4_prefix, ipv6_prefix=ipv6_prefix)
        self.table = bucket_table(path)

    def _spend(self, bucket: bytes) -> float:
        return self.table.take(bucket, self.clock, self.rate, self.burst)


class ClusterMissLimiter(MissLimiter):
    """The buckets of every host, in Redis (:meth:`RedisTier.take_token`); while Redis
    fails, ``fallback``'s (the host's), said once per outage in the log."""

    def __init__(self, shared: RedisTier, fallback: MissLimiter) -> None:
        super().__init__(fallback.rate, int(fallback.burst), fallback.clock)
        self.shared = shared
        self.fallback = fallback
        self.falling_back = False

    def bucket(self, client: str) -> bytes:
        return self.fallback.bucket(client)

    def _spend(self, bucket: bytes) -> float:
        wait = self.shared.take_token(bucket, self.rate, self.burst)
        if wait is None:
            if not self.falling_back:
                self.falling_back = True
                log.warning("miss limits: redis unavailable; counting misses on this host "
                            "only until it is back")
            return self.fallback._spend(bucket)
        if self.falling_back:
            self.falling_back = False
            log.warning("miss limits: redis is back; counting misses cluster-wide again")
        return wait


class InflightLimiter:
    """At most ``limit`` origin fetches at once in this process; the next gets 503 at
    once, not a queue."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._slots = threading.BoundedSemaphore(limit)

    @contextlib.contextmanager
    def slot(self) -> Iterator[None]:
        held = self._acquire()
        if held is None:
            raise Overloaded("too many images are being fetched; try again shortly", retry_after=1)
        try:
            yield
        finally:
            self._release(held)

    def _acquire(self) -> int | None:
        return 0 if self._slots.acquire(blocking=False) else None

    def _release(self, held: int) -> None:
        self._slots.release()


class HostInflightLimiter(InflightLimiter):
    """At most ``limit`` origin fetches at once on this host: a fetch holds one of the
    slots of the file at ``path`` (:class:`hostlimits.SlotFile`), which a worker that dies
    gives back with its life."""

    def __init__(self, path: str, limit: int) -> None:  # no semaphore: the file's locks
        self.limit = limit
        self.slots = slot_file(path)

    def _acquire(self) -> int | None:
        return self.slots.acquire(self.limit)

    def _release(self, held: int) -> None:
        self.slots.release(held)


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
