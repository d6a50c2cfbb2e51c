#!/usr/bin/env python3
"""What the limits cost per miss: per process (the memory backend), per host (the shared
table and the in-flight slot file in a temporary cache directory), per cluster (a Redis
token bucket on a local redis-server, if one is on the PATH).

Each figure is the best of 5 timeit runs, per call, with a new client network per call
(the table's worst case: a new slot each time, spread over the table) and with one client
(a flood from one network). The in-flight figure is one slot taken and given back.

Run from the repository root: ``.venv/bin/python benchmarks/limits.py``.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import timeit
from collections.abc import Callable

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fic_middleware.errors import TooManyRequests  # noqa: E402
from fic_middleware.limits import (  # noqa: E402
    ClusterMissLimiter, HostInflightLimiter, HostMissLimiter, InflightLimiter, MissLimiter,
)
from fic_middleware.redis_tier import RedisTier  # noqa: E402

NUMBER = 20_000


def per_call(action: Callable[[], None], number: int = NUMBER) -> float:
    return min(timeit.repeat(action, number=number, repeat=5)) / number


def misses(limiter: MissLimiter, clients: str) -> Callable[[], None]:
    if clients == "one":
        def one() -> None:
            try:
                limiter.take("198.51.100.7")
            except TooManyRequests:
                pass
        return one
    addresses = (f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}" for n in itertools.count())

    def many() -> None:
        limiter.take(next(addresses))
    return many


def slot(limiter: InflightLimiter) -> Callable[[], None]:
    def take_and_give() -> None:
        with limiter.slot():
            pass
    return take_and_give


def main() -> None:
    directory = tempfile.mkdtemp(prefix="fic-limits-")
    try:
        rows = []
        for clients in ("many", "one"):
            process = MissLimiter(rate=10, burst=20)
            host = HostMissLimiter(os.path.join(directory, f"limits-{clients}"), rate=10, burst=20)
            who = "a new client each" if clients == "many" else "one client, refused"
            rows.append((f"miss bucket, per process ({who})", per_call(misses(process, clients))))
            rows.append((f"miss bucket, per host ({who})", per_call(misses(host, clients))))
        rows.append(("in-flight slot, per process", per_call(slot(InflightLimiter(64)))))
        rows.append(("in-flight slot, per host", per_call(slot(HostInflightLimiter(
            os.path.join(directory, "inflight"), 64)))))
        if shutil.which("redis-server"):
            from tests.servers import RedisServer
            server = RedisServer()
            tier = RedisTier(server.url, b"bench", lock_ttl=5)
            try:
                cluster = ClusterMissLimiter(tier, MissLimiter(rate=10, burst=20))
                rows.append(("miss bucket, per cluster (Redis on loopback, a new client each)",
                             per_call(misses(cluster, "many"), 2000)))
            finally:
                tier.close()
                server.stop()
        for name, seconds in rows:
            print(f"{name:62} {seconds * 1e6:8.2f} us")
    finally:
        shutil.rmtree(directory)


if __name__ == "__main__":
    main()
