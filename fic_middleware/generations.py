"""Generation stamps of stored keys, shared by the processes of a host, so a hit can be
answered from a process's memo of decoded entries without a read transaction and still be
the record on disk.

``{store}/generations`` is a table of ``_SLOTS`` 8-byte slots that every process maps
(``MAP_SHARED``); a key's slot is picked by its first bytes (keys are BLAKE2b digests, so
uniform). After each commit that writes or removes keys (put, delete, eviction) the writer
stores a fresh random value in their slots; ``clear`` rewrites every slot.

A reader reads the key's slot *before* it opens its read transaction and keeps the value
with the entry it decodes (:meth:`fic_middleware.core.ImageCache.hit`). A commit of the key
after that read is followed by a value no reader can hold, so an unchanged slot means the
entry is still the stored record. Between a commit and its stamp a memo may serve the record
it replaced, as a read transaction begun just before the commit would. Random values, not
counters: writers in different processes need no lock (no read-modify-write), and a lost or
torn update can never bring a slot back to a value a reader holds (up to a 64-bit collision).
Keys sharing a slot only cost each other a re-read.

What the stamps cannot see is caught by the once-a-second check of the hit path (the record
is read and hashed again when an entry's per-second response is rebuilt): a writer killed
between its commit and its stamp, a table file deleted or replaced under running workers,
damage on disk. Without a directory (the memory backend) the table is private to the
process, like its store.

Fork: the mapping is shared with children and stays valid in them (the file descriptor is
closed once mapped), and a private table is copied with the store it describes, so there is
nothing to reset after ``fork()``.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import threading
from collections.abc import Iterable

_SLOTS = 1 << 16  # 512 KiB: a write invalidates 1/65536 of the memo at most
_MASK = _SLOTS - 1
_SIZE = _SLOTS * 8


def slot_of(key: bytes) -> int:
    """The slot of ``key``."""
    return int.from_bytes(key[:4], "little") & _MASK


class Generations:
    """The stamp table of one store (``path``), or of this process when ``path`` is None.

    ``view`` is the table as 8-byte integers (``view[slot_of(key)]``), None until first
    used and after :meth:`close`; :meth:`table` opens it.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.view: memoryview | None = None
        self._buffer: mmap.mmap | bytearray | None = None
        self._lock = threading.Lock()

    def table(self) -> memoryview:
        view = self.view
        if view is None:
            with self._lock:
                if self.view is None:
                    self._open()
                view = self.view
            assert view is not None
        return view

    def _open(self) -> None:
        if self.path is None:
            buffer: mmap.mmap | bytearray = bytearray(_SIZE)
        else:
            os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)  # one process sizes a new file
                if os.fstat(fd).st_size < _SIZE:
                    # Never shrunk: another process may map the file (a shorter mapping
                    # would fault there).
                    os.ftruncate(fd, _SIZE)
                buffer = mmap.mmap(fd, _SIZE)
            finally:
                os.close(fd)  # the mapping stays; closing drops the lock
        self._buffer = buffer
        self.view = memoryview(buffer).cast("Q")

    def stamp(self, key: bytes) -> int:
        """The value of ``key``'s slot now: read it before reading the key's record."""
        return int(self.table()[slot_of(key)])

    def bump(self, keys: Iterable[bytes]) -> None:
        """After a commit that changed ``keys``: a value never seen before in their slots."""
        view = self.table()
        fresh = int.from_bytes(os.urandom(8), "little")
        for key in keys:
            view[slot_of(key)] = fresh

    def bump_all(self) -> None:
        """After a commit that removed everything."""
        self.table()
        with self._lock:
            buffer = self._buffer
            assert buffer is not None
            buffer[:] = os.urandom(_SIZE)

    def close(self) -> None:
        """Drop the table (mapped again on next use). Unmapped when the last reference
        goes, so a request still reading it is not cut off."""
        with self._lock:
            self.view = self._buffer = None
