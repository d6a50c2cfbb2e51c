"""The LMDB backend: one environment per cache directory, shared by every worker on a host.

Named databases inside the environment:

- ``records``: key -> record bytes (what a hit reads, with one ``get``);
- ``index``:   key -> (sequence number, size), to find an entry's place in ``order``;
- ``order``:   big-endian sequence number -> key, oldest first: eviction pops the first
  item with a cursor, O(log n) per evicted entry, never a scan;
- ``totals``:  ``bytes``, ``entries``, ``evictions``, ``seq`` counters.

The environment is opened lazily, in the process that uses it: LMDB forbids using an env
across ``fork()`` and opening one file twice in a process, so environments live in a
per-process registry that a fork handler empties (gunicorn ``--preload`` forks after import).
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import weakref
from collections.abc import Callable
from typing import TypeVar

import lmdb

T = TypeVar("T")
log = logging.getLogger("fic_middleware")

_U64 = struct.Struct(">Q")  # big-endian so that byte order is numeric order in ``order``
_INDEX = struct.Struct("<QI")
# LMDB stores a large value on its own overflow pages: 4 KiB page granularity, plus the
# B-tree pages of the small databases and pages freed but still pinned by readers. The map
# (the data file's hard ceiling) leaves this much room above max_bytes; when a write finds
# the map full anyway, entries are evicted until it fits.
_MAP_SLACK_RATIO = 0.25
_MAP_SLACK_MIN = 8 * 1024 * 1024
_EVICT_ON_FULL = 0.1  # share of max_bytes freed when LMDB reports a full map


class _Env:
    """An open environment and its named databases (one per directory per process)."""

    def __init__(self, path: str, map_size: int) -> None:
        self.env = lmdb.open(path, map_size=map_size, max_dbs=4, subdir=True,
                             readahead=False, metasync=False, max_readers=1024)
        self.records = self.env.open_db(b"records")
        self.index = self.env.open_db(b"index")
        self.order = self.env.open_db(b"order")
        self.totals = self.env.open_db(b"totals")
        # Slots of readers that were killed (kill -9 of a worker) are freed at open.
        self.env.reader_check()


_envs: dict[str, _Env] = {}
_envs_lock = threading.Lock()
_stores: weakref.WeakSet[LMDBStore] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    # The parent's handles are not valid here: close them so this process can open its own.
    for handle in _envs.values():
        handle.env.close()
    _envs.clear()
    for store in _stores:
        store._handle = None


os.register_at_fork(after_in_child=_after_fork_in_child)


class LMDBStore:
    """Records in LMDB, evicted oldest first beyond ``max_bytes`` / ``max_entries``."""

    def __init__(self, path: str, *, max_bytes: int, max_entries: int | None = None) -> None:
        self.path = os.path.realpath(path)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.map_size = max_bytes + max(int(max_bytes * _MAP_SLACK_RATIO), _MAP_SLACK_MIN)
        self._handle: _Env | None = None
        _stores.add(self)

    def _open(self) -> _Env:
        with _envs_lock:
            handle = _envs.get(self.path)
            if handle is None:
                handle = _envs[self.path] = _Env(self.path, self.map_size)
            self._handle = handle
            return handle

    def get(self, key: bytes, decode: Callable[[bytes, memoryview | bytes], T]) -> T | None:
        # Fast path: one read-only transaction, one get, decode from the mapped pages.
        h = self._handle or self._open()
        txn = h.env.begin(db=h.records, buffers=True)
        try:  # try/finally rather than `with`: measurably cheaper on this path
            value = txn.get(key)
            return None if value is None else decode(key, value)
        finally:
            txn.abort()

    def put(self, key: bytes, value: bytes) -> bool:
        if len(value) > self.max_bytes:
            return False
        h = self._handle or self._open()
        for _ in range(3):
            try:
                with h.env.begin(write=True) as txn:
                    self._insert(h, txn, key, value)
                return True
            except lmdb.MapFullError:
                # Fragmentation or pinned pages: make room beyond the byte budget and retry.
                log.debug("LMDB map full; evicting %d%% of max_bytes", _EVICT_ON_FULL * 100)
                with h.env.begin(write=True) as txn:
                    self._evict(h, txn, target=int(self.max_bytes * (1 - _EVICT_ON_FULL)))
        log.warning("could not store a %d-byte record: LMDB map stays full", len(value))
        return False

    def _insert(self, h: _Env, txn: lmdb.Transaction, key: bytes, value: bytes) -> None:
        self._remove(h, txn, key)
        seq = self._counter(h, txn, b"seq") + 1
        txn.put(b"seq", _U64.pack(seq), db=h.totals)
        txn.put(key, value, db=h.records)
        txn.put(key, _INDEX.pack(seq, len(value)), db=h.index)
        txn.put(_U64.pack(seq), key, db=h.order)
        self._add(h, txn, len(value), 1)
        self._evict(h, txn, target=self.max_bytes)

    def _evict(self, h: _Env, txn: lmdb.Transaction, target: int) -> None:
        """Pop the oldest entries until bytes <= target and entries <= max_entries."""
        size = self._counter(h, txn, b"bytes")
        count = self._counter(h, txn, b"entries")
        evicted = 0
        with txn.cursor(db=h.order) as cursor:
            while (size > target or (self.max_entries is not None and count > self.max_entries)) \
                    and cursor.first():
                key = bytes(cursor.value())
                cursor.delete()
                freed = self._drop(h, txn, key)
                size -= freed
                count -= 1
                evicted += 1
        if evicted:
            txn.put(b"bytes", _U64.pack(size), db=h.totals)
            txn.put(b"entries", _U64.pack(count), db=h.totals)
            txn.put(b"evictions", _U64.pack(self._counter(h, txn, b"evictions") + evicted),
                    db=h.totals)

    def _drop(self, h: _Env, txn: lmdb.Transaction, key: bytes) -> int:
        """Delete a record and its index entry (not its ``order`` entry); its size."""
        raw = txn.get(key, db=h.index)
        txn.delete(key, db=h.records)
        txn.delete(key, db=h.index)
        return _INDEX.unpack(raw)[1] if raw is not None else 0

    def _remove(self, h: _Env, txn: lmdb.Transaction, key: bytes) -> bool:
        raw = txn.get(key, db=h.index)
        if raw is None:
            return False
        seq, size = _INDEX.unpack(raw)
        txn.delete(_U64.pack(seq), db=h.order)
        self._drop(h, txn, key)
        self._add(h, txn, -size, -1)
        return True

    @staticmethod
    def _counter(h: _Env, txn: lmdb.Transaction, name: bytes) -> int:
        raw = txn.get(name, db=h.totals)
        return 0 if raw is None else _U64.unpack(raw)[0]

    def _add(self, h: _Env, txn: lmdb.Transaction, size: int, count: int) -> None:
        txn.put(b"bytes", _U64.pack(self._counter(h, txn, b"bytes") + size), db=h.totals)
        txn.put(b"entries", _U64.pack(self._counter(h, txn, b"entries") + count), db=h.totals)

    def delete(self, key: bytes) -> bool:
        h = self._handle or self._open()
        with h.env.begin(write=True) as txn:
            return self._remove(h, txn, key)

    def clear(self) -> int:
        h = self._handle or self._open()
        with h.env.begin(write=True) as txn:
            count = self._counter(h, txn, b"entries")
            for db in (h.records, h.index, h.order):
                txn.drop(db, delete=False)
            txn.put(b"bytes", _U64.pack(0), db=h.totals)
            txn.put(b"entries", _U64.pack(0), db=h.totals)
        return count

    def stats(self) -> dict[str, int]:
        h = self._handle or self._open()
        with h.env.begin() as txn:
            return {name: self._counter(h, txn, name.encode())
                    for name in ("entries", "bytes", "evictions")}

    def close(self) -> None:
        with _envs_lock:
            handle = _envs.pop(self.path, None)
            for store in _stores:
                if store.path == self.path:
                    store._handle = None
        if handle is not None:
            handle.env.close()
