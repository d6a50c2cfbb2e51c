"""State of the abuse limits shared by every process of a host, in two files of the cache
directory. Both are touched only on a miss, never on a hit.

- :class:`BucketTable` (``{cache_dir}/limits``): token buckets in a fixed-size table, mmap'd.
  A slot is (key hash, tokens, time); a key lives in a window of ``PROBE`` slots from its
  hash (open addressing). A bucket refilled to full is as good as absent, so its slot is
  reused; when a whole window holds buckets not yet full, the one closest to full is
  replaced (its client starts again from a full bucket: the table errs towards letting a
  miss through, never towards refusing one). Keys are hashed with a salt drawn when the file
  is made, so a client cannot pick addresses that collide. A take holds an ``fcntl`` lock on
  the file's first byte for a few microseconds. Times are ``time.monotonic()``, one clock
  for every process of a host (Linux CLOCK_MONOTONIC, from boot).
- :class:`SlotFile` (``{cache_dir}/inflight``): slot *i* is an ``fcntl`` lock on byte *i*,
  held while a fetch is in flight. The kernel drops a process's locks when it exits,
  however it exits (``kill -9`` included), so a killed worker's slots come back at once.

``fcntl`` locks belong to a process, not to a descriptor or a thread: threads of a process
also take a thread lock, a process opens each file once (closing any descriptor of a file
drops the process's locks on it), and a forked child starts with fresh thread state (forks.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import itertools
import mmap
import os
import random
import secrets
import struct
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

from . import forks

_MAGIC = b"ficlim01"
_HEADER = struct.Struct("<8sI4x16s")  # magic, slot count, salt: 32 bytes
_SLOT = struct.Struct("<Qdd")  # key hash (0: empty), tokens, time of the last take
PROBE = 8  # slots a key may live in
SLOTS = 1 << 16  # 1.5 MiB; a bucket needs a slot only while it is not full
_WINDOW = struct.Struct("<" + "Qdd" * PROBE)
_NEVER = float("inf")  # the wait for a token when none comes back (rate 0)


class BucketTable:
    """Token buckets keyed by bytes, shared through the file ``path`` (use :func:`bucket_table`)."""

    def __init__(self, path: str, slots: int = SLOTS) -> None:
        self.path = path
        self.slots = slots
        self._size = _HEADER.size + (slots + PROBE) * _SLOT.size  # no wrap-around: spare slots
        self._lock = threading.Lock()
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX, 1, 0)
            try:
                self._salt = self._prepare(fd)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN, 1, 0)
            self._map = mmap.mmap(fd, self._size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        weakref.finalize(self, _close, fd, self._map)
        forks.register(self)

    def _prepare(self, fd: int) -> bytes:
        """The table's salt; a new file (or another format's) is made an empty table.
        Never shrunk: another process may have it mapped."""
        if os.fstat(fd).st_size < self._size:
            os.ftruncate(fd, self._size)  # the new bytes read as zeros: empty slots
        magic, slots, salt = _HEADER.unpack(os.pread(fd, _HEADER.size, 0))
        if magic == _MAGIC and slots == self.slots:
            return bytes(salt)
        salt = secrets.token_bytes(16)
        os.pwrite(fd, bytes(self._size - _HEADER.size), _HEADER.size)
        os.pwrite(fd, _HEADER.pack(_MAGIC, self.slots, salt), 0)
        return salt

    def take(self, key: bytes, clock: Callable[[], float], rate: float, burst: float) -> float:
        """Spend a token of ``key``'s bucket (``burst`` tokens, ``rate`` more per second):
        0.0, or the seconds until a token is back (and nothing spent). ``clock`` is read
        under the lock, so that no process writes a time older than the one stored."""
        digest = int.from_bytes(hashlib.blake2b(key, digest_size=8, key=self._salt).digest(),
                                "little") or 1
        offset = _HEADER.size + digest % self.slots * _SLOT.size
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_EX, 1, 0)
            try:
                now = clock()
                window = _WINDOW.unpack_from(self._map, offset)
                index, tokens = _place(window, digest, now, rate, burst)
                wait = 0.0
                if tokens >= 1:
                    tokens -= 1
                else:
                    wait = (1 - tokens) / rate if rate > 0 else _NEVER
                _SLOT.pack_into(self._map, offset + index * _SLOT.size, digest, tokens, now)
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, 0)
        return wait

    def after_fork(self) -> None:
        self._lock = threading.Lock()


def _place(window: tuple[float, ...], digest: int, now: float, rate: float, burst: float
           ) -> tuple[int, float]:
    """The slot of ``digest`` in ``window`` and its tokens now: its own slot if it has one,
    else an empty one, else a full one, else the one closest to full (a fresh bucket)."""
    hashes = window[0::3]
    if digest in hashes:  # the common cases first, at C speed
        index = hashes.index(digest)
        return index, _refilled(window[3 * index + 1], window[3 * index + 2], now, rate, burst)
    if 0 in hashes:
        return hashes.index(0), burst
    fullest, most = 0, -_NEVER
    for index in range(PROBE):
        level = _refilled(window[3 * index + 1], window[3 * index + 2], now, rate, burst)
        if level >= burst:
            return index, burst
        if level > most:
            fullest, most = index, level
    return fullest, burst


def _refilled(tokens: float, at: float, now: float, rate: float, burst: float) -> float:
    if now < at:  # written before a reboot: time.monotonic() starts again at boot
        return burst
    return min(burst, tokens + (now - at) * rate)


class SlotFile:
    """``limit`` slots, each an ``fcntl`` lock on one byte of ``path`` (use :func:`slot_file`)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self._held: set[int] = set()  # this process's slots (its own locks never block it)
        self._lock = threading.Lock()
        weakref.finalize(self, os.close, self._fd)
        forks.register(self)

    def acquire(self, limit: int) -> int | None:
        """A free slot among the first ``limit``, now held by this process; None if none is.
        Tries each without waiting, from a random one (so a busy host needs few tries)."""
        start = random.randrange(limit)
        with self._lock:
            for index in itertools.chain(range(start, limit), range(start)):
                if index in self._held:
                    continue
                try:
                    fcntl.lockf(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, index)
                except (BlockingIOError, PermissionError):  # EAGAIN or EACCES: another's
                    continue
                self._held.add(index)
                return index
        return None

    def release(self, index: int) -> None:
        with self._lock:
            fcntl.lockf(self._fd, fcntl.LOCK_UN, 1, index)
            self._held.discard(index)

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._held = set()  # the parent's locks are the parent's


def _close(fd: int, mapped: mmap.mmap) -> None:
    mapped.close()
    os.close(fd)


# One instance per file and process: see the module docstring.
_tables: weakref.WeakValueDictionary[str, BucketTable] = weakref.WeakValueDictionary()
_slot_files: weakref.WeakValueDictionary[str, SlotFile] = weakref.WeakValueDictionary()
_open_lock = threading.Lock()
_F = TypeVar("_F", BucketTable, SlotFile)


def bucket_table(path: str) -> BucketTable:
    """This process's table at ``path``."""
    return _opened(_tables, BucketTable, path)


def slot_file(path: str) -> SlotFile:
    """This process's slot file at ``path``."""
    return _opened(_slot_files, SlotFile, path)


def _opened(registry: weakref.WeakValueDictionary[str, _F], make: Callable[[str], _F],
            path: str) -> _F:
    path = os.path.realpath(path)
    with _open_lock:
        found = registry.get(path)
        if found is None:
            found = registry[path] = make(path)
        return found



class _Registry:
    """The lock of the two registries above, new in a forked child (forks.py)."""

    def after_fork(self) -> None:
        global _open_lock
        _open_lock = threading.Lock()


_registry = _Registry()
forks.register(_registry)
