"""The composition root: the one place that builds the parts of a cache from a Config and
wires them together. The middleware, the CLI and the tests all start here.

::

    parts = build(Config.load(cache_dir="/var/cache/fic", origins={...}))
    parts.cache.respond(parts.router.route("/o/cdn/cat.jpg"))
    parts.operations.stats()
    parts.close()
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from .breaker import Breaker
from .config import Config
from .core import ImageCache
from .fetch import Fetcher
from .limits import inflight_limiter, miss_limiter
from .locking import HostLocks, Lock, LockChain, ProcessOnly
from .metrics import Stats
from .operations import Operations
from .purgelog import PurgeLog
from .record import Reader, Sealer
from .redis_tier import RedisTier
from .routing import Router
from .storage import Storage, open_negative_storage, open_storage
from .tiers import Tiers

# Decoded hot entries per process: at most an eighth of the budget, 64 MiB.
_READER_MEMO_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Parts:
    """Everything one cache is made of; ``close()`` releases it all."""

    config: Config
    storage: Storage
    negatives: Storage
    tiers: Tiers
    fetcher: Fetcher
    router: Router
    stats: Stats
    cache: ImageCache
    operations: Operations

    def close(self) -> None:
        """Release the refresh threads, the locks, the storage and the connection pools."""
        self.cache.close()
        self.tiers.close()
        self.fetcher.close()


def build(config: Config, clock: Callable[[], float] = time.time) -> Parts:
    """The parts of a cache for ``config``, on ``clock`` (seconds since the epoch)."""
    on_disk = config.backend == "lmdb" and config.cache_dir
    stats = Stats(os.path.join(config.cache_dir, "stats") if on_disk and config.cache_dir else None)
    sealer = Sealer(config.encryption_key) if config.encryption_key else None
    reader = Reader(min(config.max_bytes // 8, _READER_MEMO_BYTES), sealer)
    locks: Lock = (HostLocks(os.path.join(config.cache_dir, "fic.lock"))
                   if on_disk and config.cache_dir else ProcessOnly())
    shared: RedisTier | None = None
    if config.redis_url:
        # A host that died mid-fetch holds its Redis lock until this runs out.
        shared = RedisTier(config.redis_url, config.redis_auth_key,
                           lock_ttl=config.total_timeout + 5, on_failure=stats.redis_failed)
        locks = LockChain(locks, shared)
    storage = open_storage(config)
    negatives = open_negative_storage(config)
    tiers = Tiers(storage, negatives, shared, reader, stats, config.allowed_types)
    if config.redis_url:
        # Purges reach the other hosts' L1 through a Redis stream (purgelog.py).
        tiers.purges = PurgeLog(config.redis_url, config.cache_dir, tiers.forget_here,
                                tiers.forget_all_here, on_failure=stats.redis_failed)
    fetcher = Fetcher(config)
    router = Router(config)
    # Host-wide with a cache directory, cluster-wide with Redis (limits.py).
    misses = miss_limiter(config, shared)
    # Shared by the host's workers; a probe may take as long as a whole fetch.
    breaker = Breaker(os.path.join(config.cache_dir, "breaker") if on_disk and config.cache_dir
                      else None, config.breaker_failures, config.breaker_cooldown,
                      probe_lease=config.total_timeout + 1)
    cache = ImageCache(config, tiers, fetcher, locks, stats,
                       inflight_limiter(config), misses, breaker, clock)
    operations = Operations(config, tiers, router, stats, breaker, clock)
    return Parts(config, storage, negatives, tiers, fetcher, router, stats, cache, operations)
