"""Purges reach every host: a Redis stream that each host's L1 follows.

A purge deletes from this host's LMDB and from Redis at once (:mod:`core`), then is
published here: ``XADD {prefix}purges MAXLEN ~ N`` of an entry carrying the cache keys (or
``all``) and a sequence number drawn from ``{prefix}purges:n`` in the same script. On each
host one worker process at a time, the holder of an ``fcntl`` lock on ``purgelog.lock`` in
the cache directory, follows the stream with a blocking ``XREAD`` and deletes those keys
from its LMDB; when it dies the kernel frees the lock and another worker takes over. The
hit path never talks to Redis.

The host's position (last entry applied, and its number) is kept in ``purgelog.pos`` in the
cache directory, replaced atomically. Numbers follow each other, so a host knows when it
missed entries: the stream was trimmed past its position while it was down, or Redis lost
the stream. It then drops its whole L1: a cold cache, never a purged image. Each process
catches up once before its first request (one round trip), so a host that was stopped during
a purge does not serve the purged image after its restart.

Entries are not authenticated (records are, :mod:`redis_tier`): an entry can only make a
host forget, which whoever can write to Redis can already do by trimming the stream. Redis
failures are counted and logged at most once a minute; they never reach a request.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from . import forks
from .routing import KEY_BYTES

log = logging.getLogger("fic_middleware")

# Redis names under the tier's prefix; RedisTier.clear() keeps them.
STREAM = b"purges"
COUNTER = b"purges:n"
MAX_LENGTH = 10_000  # entries kept: about 1 MB; a host down longer drops its L1
_TIMEOUT = 0.25  # Redis is on the LAN, as in redis_tier
_BLOCK = 0.25  # XREAD BLOCK: the longest close() waits for the follower
_RETRY = 0.5  # seconds between two tries to take the follower lock or to reach Redis
_BATCH = 100
_LOG_EVERY = 60.0
_START = b"0-0"
# One script, so the number and the entry it numbers are written together (Redis runs a
# script alone: https://redis.io/docs/latest/develop/interact/programmability/eval-intro/).
_PUBLISH = """
local n = redis.call('INCR', KEYS[2])
return redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*',
                  'n', n, 'h', ARGV[2], 'op', ARGV[3], 'k', ARGV[4])
"""


class Position(NamedTuple):
    """The last entry a host applied: its stream ID and its number."""
    id: bytes
    n: int


class PurgeLog:
    """Publishes this host's purges and applies the other hosts' purges to this host's L1.

    :param forget: deletes keys from this host's L1 (not from Redis).
    :param forget_all: empties this host's L1; returns the number of entries dropped.
    :param cache_dir: where the position and the follower lock live; None (memory backend)
        makes each process a host of its own.
    """

    def __init__(self, url: str, cache_dir: str | None, forget: Callable[[list[bytes]], object],
                 forget_all: Callable[[], int], *, prefix: str = "fic:",
                 max_length: int = MAX_LENGTH, on_failure: Callable[[], None] = lambda: None
                 ) -> None:
        import redis  # an optional dependency, checked by Config

        self.client = redis.Redis.from_url(url, socket_timeout=_TIMEOUT,
                                           socket_connect_timeout=_TIMEOUT)
        # The follower's socket waits longer than its XREAD blocks.
        self._reader = redis.Redis.from_url(url, socket_timeout=_BLOCK + _TIMEOUT,
                                            socket_connect_timeout=_TIMEOUT)
        self._publish_script = self.client.register_script(_PUBLISH)
        self.stream = prefix.encode() + STREAM
        self.counter = prefix.encode() + COUNTER
        self.max_length = max_length
        self._forget = forget
        self._forget_all = forget_all
        self.on_failure = on_failure
        self.failures = 0
        self.applied = 0  # entries of other hosts applied by this process
        self.resyncs = 0  # times this process dropped the L1 for a gap in the log
        self._logged_at = -_LOG_EVERY
        self._pos_file = os.path.join(cache_dir, "purgelog.pos") if cache_dir else None
        self._lock_file = os.path.join(cache_dir, "purgelog.lock") if cache_dir else None
        self.host = _host_id(self._lock_file)
        self._position: Position | None = None  # kept here when there is no cache_dir
        self._reset()
        forks.register(self)

    def _reset(self) -> None:
        """This process's follower state (a forked child starts without one)."""
        self._pid = os.getpid()
        self._mutex = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock_fd: int | None = None

    def after_fork(self) -> None:
        """In a forked child: no follower, no lock (the parent's stay the parent's)."""
        if self._lock_fd is not None:
            os.close(self._lock_fd)
        self._reset()
        if self._lock_file is None:
            self.host = _host_id(None)  # a memory cache per process: a host per process

    # --- publishing ---

    def publish(self, keys: Sequence[bytes]) -> bool:
        """Tell the other hosts to forget ``keys`` (already forgotten here)."""
        return self._publish(b"keys", b"".join(keys))

    def publish_all(self) -> bool:
        """Tell the other hosts to empty their L1 (this host's is already empty)."""
        return self._publish(b"all", b"")

    def _publish(self, op: bytes, keys: bytes) -> bool:
        try:
            self._publish_script(keys=[self.stream, self.counter],
                                 args=[self.max_length, self.host, op, keys], client=self.client)
        except Exception as exc:  # redis.RedisError, OSError...
            self.on_failure()
            self.failures += 1
            # Every time, not once a minute: an operator asked for this purge.
            log.error("purge not published to the other hosts (%s: %s); they serve their "
                      "copies until these expire", type(exc).__name__, exc)
            return False
        return True

    # --- following ---

    def start(self) -> None:
        """Catch up with the log, then follow it in a daemon thread: once per process,
        before its first request (a failure to reach Redis is logged, not raised)."""
        if self._thread is not None:
            return
        with self._mutex:
            if self._thread is not None:
                return
            self._stop = threading.Event()
            try:
                while self._step(self.client, None) == _BATCH:
                    pass
            except Exception as exc:
                self._failed("catch-up", exc)
            self._thread = threading.Thread(target=self._follow, args=(self._stop,),
                                            name="fic-purgelog", daemon=True)
            self._thread.start()

    def _follow(self, stop: threading.Event) -> None:
        while not stop.is_set():
            if not self._take_lock():
                stop.wait(_RETRY)
                continue
            try:
                self._step(self._reader, int(_BLOCK * 1000))
            except Exception as exc:
                self._failed("follow", exc)
                stop.wait(_RETRY)

    def _take_lock(self) -> bool:
        """Whether this process is the host's follower (one per cache directory)."""
        if self._lock_file is None or self._lock_fd is not None:
            return True
        fd = os.open(self._lock_file, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._lock_fd = fd
        return True

    def _step(self, client: Any, block_ms: int | None) -> int:
        """Apply the entries after the saved position (waiting up to ``block_ms`` for
        some); drop the L1 if the log no longer reaches back to it. Entries read."""
        position = self._load()
        if position is None:
            self._resync(client, "no position saved")
            return 0
        pipe = client.pipeline(transaction=False)
        pipe.get(self.counter)
        pipe.xread({self.stream: position.id}, count=_BATCH, block=block_ms)
        counter, streams = pipe.execute()
        published = int(counter or 0)
        entries = streams[0][1] if streams else []
        if published < position.n or (published > position.n and not entries):
            self._resync(client, "the log no longer reaches back to this host's position")
            return 0
        for entry_id, fields in entries:
            if _number(fields) != position.n + 1:
                self._resync(client, "entries missing from the log")
                return len(entries)
            if fields.get(b"h") != self.host:  # this host applied its own already
                self._apply(fields)
            position = Position(entry_id, position.n + 1)
        if entries:
            self._save(position)
        return len(entries)

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        op, keys = fields.get(b"op"), fields.get(b"k", b"")
        if op == b"keys" and keys and len(keys) % KEY_BYTES == 0:
            self._forget([keys[i:i + KEY_BYTES] for i in range(0, len(keys), KEY_BYTES)])
        else:
            if op != b"all":  # from a newer release, or damaged: forget more, not less
                log.warning("purge log: an entry this version cannot read; emptying the cache")
            self._forget_all()
        self.applied += 1

    def _resync(self, client: Any, reason: str) -> None:
        """Empty the L1 and start again from the end of the log: whatever was purged
        before is gone from here too."""
        pipe = client.pipeline(transaction=True)
        pipe.get(self.counter)
        pipe.xrevrange(self.stream, count=1)
        counter, last = pipe.execute()
        position = Position(last[0][0] if last else _START, int(counter or 0))
        dropped = self._forget_all()  # after reading the end: purges from then on follow
        self.resyncs += 1
        if dropped:
            log.warning("purge log: %s; dropped the local cache (%d entries) rather than "
                        "serve purged images", reason, dropped)
        self._save(position)

    def _load(self) -> Position | None:
        if self._pos_file is None:
            return self._position
        try:
            with open(self._pos_file, "rb") as f:
                entry_id, n = f.read().split()
            return Position(entry_id, int(n))
        except FileNotFoundError:
            return None
        except ValueError:  # damaged: as if there were none, which drops the L1
            return None

    def _save(self, position: Position) -> None:
        if self._pos_file is None:
            self._position = position
            return
        temporary = f"{self._pos_file}.{os.getpid()}.{threading.get_ident()}"
        with open(temporary, "wb") as f:
            f.write(b"%s %d\n" % position)
        os.replace(temporary, self._pos_file)  # atomic: readers see the old or the new

    def _failed(self, what: str, exc: Exception) -> None:
        self.on_failure()
        self.failures += 1
        now = time.monotonic()
        if now - self._logged_at >= _LOG_EVERY:
            self._logged_at = now
            log.warning("purge log unavailable (%s failed: %s); purges from other hosts wait "
                        "(%d failures so far)", what, type(exc).__name__, self.failures)

    def close(self) -> None:
        """Stop the follower (within one XREAD block) and release the lock and clients."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and self._pid == os.getpid():
            thread.join()
        if self._lock_fd is not None and self._pid == os.getpid():
            os.close(self._lock_fd)  # frees the lock: another worker follows
            self._lock_fd = None
        self.client.close()
        self._reader.close()


def _number(fields: dict[bytes, bytes]) -> int:
    try:
        return int(fields.get(b"n", b""))
    except ValueError:
        return -1


def _host_id(lock_file: str | None) -> bytes:
    """Who published an entry, so that a host skips its own. Per cache directory: the
    identity of its lock file, whose ctime changes if the directory is copied to another
    host (which must not skip this host's purges). Without one: per process."""
    if lock_file is None:
        return secrets.token_bytes(16)
    os.close(os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o600))
    st = os.stat(lock_file)
    return hashlib.blake2b(f"{socket.gethostname()} {st.st_dev} {st.st_ino} {st.st_ctime_ns}"
                           .encode(), digest_size=16).digest()

