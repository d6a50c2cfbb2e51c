"""The shared tier: records in Redis, shared by the hosts that point ``redis_url`` at it.

Each host keeps its LMDB cache (L1); a miss there asks Redis (L2) before the origin, and a
fetch stores in both. Whoever can write to Redis is not trusted: each value is
``HMAC-SHA256(auth_key, key | record) | record``, and a value whose tag does not check out
is dropped as corrupt (the caller then checks type and magic bytes like a fetch's). A lock
with ``SET NX PX`` makes one host fetch a key while the others wait; the hosts' miss
buckets (:class:`limits.ClusterMissLimiter`) live there too. Redis is a helper, never a
dependency of a request: every call has short timeouts, a failure is counted and logged at
most once a minute, and after one the tier is skipped for a few seconds (so a dead Redis
costs nothing per request).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from . import purgelog
from .extras import require
from .locking import wait_for
from .record import CorruptRecord

log = logging.getLogger("fic_middleware")

# Redis is on the LAN: an answer slower than this is as good as none.
_TIMEOUT = 0.25
_BACKOFF = 5.0  # seconds the tier is skipped after a failure
_LOG_EVERY = 60.0
# Compare-and-delete: only the holder's token releases a lock.
_TAG_BYTES = 32
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"
# A token bucket of misses (limits.ClusterMissLimiter): refill, then take one, in one atomic
# step, on Redis's clock (so the hosts' clocks need not agree). ARGV: rate/s, burst, TTL in
# ms (the time to refill: an absent bucket is a full one). Returns the seconds until a token
# is back, "0" when one was taken.
_TAKE_TOKEN = """
local rate, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(state[1]) or burst, tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local wait = 0
if tokens >= 1 then tokens = tokens - 1
elseif rate > 0 then wait = (1 - tokens) / rate
else wait = -1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return tostring(wait)
"""
_DAY_MS = 86_400_000


class RedisTier:
    """Records and fetch locks in Redis; every method swallows Redis failures."""

    def __init__(self, url: str, auth_key: bytes, *, lock_ttl: float, prefix: str = "fic:",
                 on_failure: Callable[[], None] = lambda: None) -> None:
        redis = require("redis", "redis", "redis_url")
        self.client = redis.Redis.from_url(url, socket_timeout=_TIMEOUT,
                                           socket_connect_timeout=_TIMEOUT,
                                           health_check_interval=30)
        self.prefix = prefix.encode()
        self._auth_key = auth_key
        self.lock_ttl_ms = int(lock_ttl * 1000)
        self.on_failure = on_failure
        self._down_until = 0.0
        self._logged_at = -_LOG_EVERY
        self._tokens: dict[bytes, bytes] = {}
        self._lock = threading.Lock()
        self._take_token = self.client.register_script(_TAKE_TOKEN)

    def _call(self, what: str, action: Callable[[], Any], default: Any) -> Any:
        now = time.monotonic()
        if now < self._down_until:
            return default
        try:
            return action()
        except Exception as exc:  # redis.RedisError, OSError...: never the request's problem
            self.on_failure()
            with self._lock:
                self._down_until = now + _BACKOFF
                if now - self._logged_at >= _LOG_EVERY:
                    self._logged_at = now
                    log.warning("redis tier unavailable (%s failed: %s); serving without it "
                                "(counted in redis_failures)", what, type(exc).__name__)
            return default

    def get(self, key: bytes) -> bytes | None:
        """The record stored under ``key``, or None if absent or Redis is unreachable.
        Raises CorruptRecord (after deleting it) for a value that is not authentic."""
        value: bytes | None = self._call("get", lambda: self.client.get(self.prefix + key), None)
        if value is None:
            return None
        tag, record = value[:_TAG_BYTES], value[_TAG_BYTES:]
        if not hmac.compare_digest(tag, self._tag(key, record)):
            self.delete(key)
            raise CorruptRecord("record fails its authentication")
        return record

    def put(self, key: bytes, record: bytes, ttl: float) -> None:
        """Keep ``record`` for ``ttl`` seconds (at least one)."""
        value = self._tag(key, record) + record
        self._call("set", lambda: self.client.set(self.prefix + key, value,
                                                  px=max(1000, int(ttl * 1000))), None)

    def _tag(self, key: bytes, record: bytes) -> bytes:
        return hmac.new(self._auth_key, self.prefix + key + b"\0" + record, hashlib.sha256).digest()

    def delete(self, key: bytes) -> bool:
        return bool(self._call("delete", lambda: self.client.delete(self.prefix + key), 0))

    def clear(self) -> int:
        keep = {self.prefix + name for name in (purgelog.STREAM, purgelog.COUNTER)}

        def drop_all() -> int:
            count = 0
            for name in self.client.scan_iter(match=self.prefix + b"*", count=1000):
                if name not in keep:  # the purge log goes on: hosts read "all" in it
                    count += int(self.client.delete(name))
            return count
        return int(self._call("clear", drop_all, 0))

    def take_token(self, bucket: bytes, rate: float, burst: float) -> float | None:
        """Spend a token of the miss bucket ``bucket`` shared by every host: 0.0, the
        seconds until a token is back (inf: never), or None when Redis is unreachable."""
        ttl_ms = min(_DAY_MS, math.ceil(burst / rate * 1000) + 1000) if rate > 0 else _DAY_MS
        wait = self._call("take", lambda: self._take_token(
            keys=[self.prefix + b"miss:" + bucket.hex().encode()], args=[rate, burst, ttl_ms]), None)
        if wait is None:
            return None
        seconds = float(wait)
        return math.inf if seconds < 0 else seconds

    def acquire(self, key: bytes, timeout: float, ready: Callable[[], bool]) -> bool:
        """Hold ``key``'s fetch lock across hosts. Without Redis, go ahead (True)."""
        name = self.prefix + b"lock:" + key
        token = secrets.token_bytes(16)

        def try_lock() -> bool:
            taken = self._call("lock", lambda: self.client.set(name, token, nx=True,
                                                               px=self.lock_ttl_ms), "down")
            return taken == "down" or bool(taken)

        if wait_for(try_lock, timeout, ready):
            self._tokens[key] = token
            return True
        return False

    def release(self, key: bytes) -> None:
        token = self._tokens.pop(key, None)
        if token is not None:
            self._call("unlock", lambda: self.client.eval(_RELEASE, 1, self.prefix + b"lock:" + key,
                                                          token), None)

    def close(self) -> None:
        self.client.close()
