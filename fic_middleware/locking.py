"""One origin fetch per key at a time: across threads, across processes on a host, and (with
the Redis tier) across hosts.

- :class:`SingleFlight`: threads of one process share one fetch per key; the others wait
  for it, then read what it stored.
- :class:`HostLocks`: processes of one host take an ``fcntl`` lock on one byte of a lock file
  in the cache directory (the byte at an offset drawn from the key). The kernel drops the
  lock when its holder exits, however it exits (``kill -9`` included), so a crashed leader
  never leaves the key stuck: a waiter gets the lock and fetches instead.

Waiters poll the storage while they wait, so they are served as soon as the leader stores.
"""

from __future__ import annotations

import fcntl
import os
import threading
import time
from collections.abc import Callable
from typing import Protocol

from . import forks

# Backoff of a waiter between two looks at the storage and the lock.
_POLL_FIRST = 0.005
_POLL_MAX = 0.05


class Flight:
    """One fetch in progress in this process."""

    __slots__ = ("done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.error: BaseException | None = None


class SingleFlight:
    def __init__(self) -> None:
        self._flights: dict[bytes, Flight] = {}
        self._lock = threading.Lock()

    def join(self, key: bytes) -> tuple[Flight, bool]:
        """The flight for ``key`` and whether the caller leads it (and must :meth:`land` it)."""
        with self._lock:
            flight = self._flights.get(key)
            if flight is not None:
                return flight, False
            flight = self._flights[key] = Flight()
            return flight, True

    def land(self, key: bytes, flight: Flight, error: BaseException | None = None) -> None:
        flight.error = error
        with self._lock:
            self._flights.pop(key, None)
        flight.done.set()


class Lock(Protocol):
    def acquire(self, key: bytes, timeout: float, ready: Callable[[], bool]) -> bool:
        """Wait until this process holds ``key``'s lock (True), or until ``ready()`` says the
        work was done by someone else or ``timeout`` passed (False)."""

    def release(self, key: bytes) -> None: ...

    def close(self) -> None: ...


def wait_for(try_lock: Callable[[], bool], timeout: float, ready: Callable[[], bool]) -> bool:
    """Poll ``try_lock`` with backoff until it succeeds, ``ready()`` or ``timeout``."""
    deadline = time.monotonic() + timeout
    pause = _POLL_FIRST
    while True:
        if try_lock():
            return True
        if ready():
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(pause, remaining))
        pause = min(pause * 2, _POLL_MAX)


class ProcessOnly:
    """No lock between processes (the memory backend is per process anyway)."""

    def acquire(self, key: bytes, timeout: float, ready: Callable[[], bool]) -> bool:
        return True

    def release(self, key: bytes) -> None:
        """Nothing was taken."""

    def close(self) -> None:
        """Nothing to release."""


class LockChain:
    """Both locks, in order (the host's first, so one process per host asks Redis)."""

    def __init__(self, first: Lock, second: Lock) -> None:
        self.first, self.second = first, second

    def acquire(self, key: bytes, timeout: float, ready: Callable[[], bool]) -> bool:
        deadline = time.monotonic() + timeout
        if not self.first.acquire(key, timeout, ready):
            return False
        if self.second.acquire(key, max(0.0, deadline - time.monotonic()), ready):
            return True
        self.first.release(key)
        return False

    def release(self, key: bytes) -> None:
        self.second.release(key)
        self.first.release(key)

    def close(self) -> None:
        self.second.close()
        self.first.close()


class HostLocks:
    """``fcntl`` byte-range locks on ``path``, one byte per key (offset from the key)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = -1
        forks.register(self)

    def after_fork(self) -> None:
        # fcntl locks belong to the process: the child opens its own descriptor. Closing the
        # inherited one releases nothing of the parent's (locks are per process and inode).
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1

    def _file(self) -> int:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    @staticmethod
    def _offset(key: bytes) -> int:
        return int.from_bytes(key[:4], "big")

    def acquire(self, key: bytes, timeout: float, ready: Callable[[], bool]) -> bool:
        fd, offset = self._file(), self._offset(key)

        def try_lock() -> bool:
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, offset)
            except (BlockingIOError, PermissionError):
                return False
            return True

        return wait_for(try_lock, timeout, ready)

    def release(self, key: bytes) -> None:
        fcntl.lockf(self._file(), fcntl.LOCK_UN, 1, self._offset(key))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = -1
