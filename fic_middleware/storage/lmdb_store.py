"""The LMDB backend: one environment per cache directory, shared by every worker on a host.

Named databases inside the environment:

- ``records``: key -> record bytes (what a hit reads, with one ``get``);
- ``meta``:    key -> the eviction policy's :class:`~fic_middleware.eviction.Meta`;
- ``order``:   queue byte + position + sequence number (big-endian) -> key, so the oldest
  key of a queue is one cursor ``set_range`` away: O(log n), never a scan;
- ``ghosts`` / ``ghost_order``: keys S3-FIFO remembers after evicting them;
- ``totals``:  counters (bytes per queue, entries, evictions, sequence, ghosts).

Sizes count what a record takes on disk (:func:`disk_size`: whole 4 KiB overflow pages for
large values, plus the index entries), so ``max_bytes`` bounds the data file, not only the
payload.

Hits never write: a process counts its hits in memory and hands them to the policy inside
its next write transaction (or after a batch of distinct keys).

After each commit, the keys it wrote or removed get a new stamp in ``{path}/generations``
(:mod:`fic_middleware.generations`), which tells every process's memo of decoded entries
that their record changed.

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
from collections.abc import Callable, Iterator
from typing import TypeVar

import lmdb

from .. import forks
from ..eviction import POLICIES, Meta
from ..generations import Generations

T = TypeVar("T")
log = logging.getLogger("fic_middleware")

_U64 = struct.Struct(">Q")  # big-endian: byte order is numeric order in ``order``
_META = struct.Struct("<BQQIB")
_COUNTERS = (b"bytes0", b"bytes1", b"entries", b"evictions", b"seq", b"ghosts")
# LMDB stores a large value on its own overflow pages: 4 KiB page granularity, plus the
# B-tree pages of the small databases and pages freed but still pinned by readers. The map
# (the data file's hard ceiling) leaves this much room above max_bytes; when a write finds
# the map full anyway, entries are evicted until it fits.
_MAP_SLACK_RATIO = 0.25
_MAP_SLACK_MIN = 8 * 1024 * 1024
_EVICT_ON_FULL = 0.1  # share of what is stored freed when LMDB reports a full map
_PAGE = 4096
# A value larger than about half a page goes on overflow pages of its own (LMDB's
# me_nodemax); the leaf nodes and B-tree entries of records/meta/order cost about this much.
_OVERFLOW_FROM = 2000
_ENTRY_OVERHEAD = 256


def disk_size(length: int) -> int:
    """What a record of ``length`` bytes takes in the data file: the unit of the budget."""
    if length > _OVERFLOW_FROM:
        return -(-(length + 16) // _PAGE) * _PAGE + _ENTRY_OVERHEAD
    return length + _ENTRY_OVERHEAD
_TOUCH_BATCH = 4096  # distinct keys hit before the counts are written without a put


class _Env:
    """An open environment and its named databases (one per directory per process)."""

    def __init__(self, path: str, map_size: int) -> None:
        self.env = lmdb.open(path, map_size=map_size, max_dbs=8, subdir=True,
                             readahead=False, metasync=False, max_readers=1024)
        self.records = self.env.open_db(b"records")
        self.meta = self.env.open_db(b"meta")
        self.order = self.env.open_db(b"order")
        self.ghosts = self.env.open_db(b"ghosts")
        self.ghost_order = self.env.open_db(b"ghost_order")
        self.totals = self.env.open_db(b"totals")
        # Slots of readers that were killed (kill -9 of a worker) are freed at open.
        self.env.reader_check()


class _Ledger:
    """The eviction ledger inside one write transaction; counters are saved at the end."""

    def __init__(self, h: _Env, txn: lmdb.Transaction) -> None:
        self.h = h
        self.txn = txn
        self.counts = {name: _read_u64(txn, name, h.totals) for name in _COUNTERS}
        self.changed: list[bytes] = []  # records written or removed: stamped after the commit

    def save(self) -> None:
        for name, value in self.counts.items():
            self.txn.put(name, _U64.pack(value), db=self.h.totals)

    @property
    def total_bytes(self) -> int:
        return self.counts[b"bytes0"] + self.counts[b"bytes1"]

    def entries(self) -> int:
        return self.counts[b"entries"]

    def meta(self, key: bytes) -> Meta | None:
        raw = self.txn.get(key, db=self.h.meta)
        return None if raw is None else Meta(*_META.unpack(raw))

    def place(self, key: bytes, meta: Meta) -> None:
        old = self.meta(key)
        if old is not None:
            self.counts[b"bytes%d" % old.queue] -= old.size
            if old[:3] != meta[:3]:
                self.txn.delete(_position(old), db=self.h.order)
        else:
            self.counts[b"entries"] += 1
        self.counts[b"bytes%d" % meta.queue] += meta.size
        self.txn.put(key, _META.pack(*meta), db=self.h.meta)
        if old is None or old[:3] != meta[:3]:
            self.txn.put(_position(meta), key, db=self.h.order)

    def drop(self, key: bytes) -> None:
        old = self.meta(key)
        if old is not None:
            self.counts[b"bytes%d" % old.queue] -= old.size
            self.counts[b"entries"] -= 1
            self.txn.delete(_position(old), db=self.h.order)
            self.txn.delete(key, db=self.h.meta)

    def oldest(self, queue: int) -> bytes | None:
        with self.txn.cursor(db=self.h.order) as cursor:
            prefix = bytes((queue,))
            if cursor.set_range(prefix) and cursor.key()[:1] == prefix:
                return bytes(cursor.value())
        return None

    def next_seq(self) -> int:
        self.counts[b"seq"] += 1
        return self.counts[b"seq"]

    def queue_bytes(self, queue: int) -> int:
        return self.counts[b"bytes%d" % queue]

    def ghost_add(self, key: bytes, limit: int) -> None:
        seq = _U64.pack(self.next_seq())
        if self.txn.put(key, seq, db=self.h.ghosts, overwrite=False):
            self.txn.put(seq, key, db=self.h.ghost_order)
            self.counts[b"ghosts"] += 1
        with self.txn.cursor(db=self.h.ghost_order) as cursor:
            while self.counts[b"ghosts"] > limit and cursor.first():
                self.txn.delete(bytes(cursor.value()), db=self.h.ghosts)
                cursor.delete()
                self.counts[b"ghosts"] -= 1

    def ghost_pop(self, key: bytes) -> bool:
        seq = self.txn.pop(key, db=self.h.ghosts)
        if seq is None:
            return False
        self.txn.delete(seq, db=self.h.ghost_order)
        self.counts[b"ghosts"] -= 1
        return True


def _position(meta: Meta) -> bytes:
    return bytes((meta.queue,)) + _U64.pack(meta.order) + _U64.pack(meta.seq)


def _read_u64(txn: lmdb.Transaction, name: bytes, db: lmdb._Database) -> int:
    raw = txn.get(name, db=db)
    return 0 if raw is None else int(_U64.unpack(raw)[0])


_envs: dict[str, _Env] = {}
_envs_lock = threading.Lock()
_stores: weakref.WeakSet[LMDBStore] = weakref.WeakSet()


def _drop_inherited_envs() -> None:
    # The parent's handles are not valid here: close them so this process can open its own.
    for handle in _envs.values():
        handle.env.close()
    _envs.clear()


class LMDBStore:
    """Records in LMDB, evicted by the configured policy beyond ``max_bytes``/``max_entries``."""

    def __init__(self, path: str, *, max_bytes: int, max_entries: int | None = None,
                 policy: str = "lru") -> None:
        self.path = os.path.realpath(path)
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.policy = POLICIES[policy](max_bytes)
        self._track = self.policy.tracks_hits
        self.map_size = max_bytes + max(int(max_bytes * _MAP_SLACK_RATIO), _MAP_SLACK_MIN)
        self._handle: _Env | None = None
        self._touched: dict[bytes, int] = {}
        self.generations = Generations(os.path.join(self.path, "generations"))
        _stores.add(self)
        forks.register(self)

    def after_fork(self) -> None:
        _drop_inherited_envs()  # idempotent: the first store in the child closes them all
        self._handle = None
        self._touched = {}

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
            if value is None:
                return None
            result = decode(key, value)
        finally:
            txn.abort()
        if self._track:  # counted in memory; the policy sees it in a later write
            self._touched[key] = self._touched.get(key, 0) + 1
            if len(self._touched) >= _TOUCH_BATCH:
                self._write(lambda ledger: None)
        return result

    def put(self, key: bytes, value: bytes, expires_at: float = 0.0) -> bool:
        size = disk_size(len(value))
        if size > self.max_bytes:
            return False

        def insert(ledger: _Ledger) -> None:
            ledger.txn.put(key, value, db=ledger.h.records)
            ledger.changed.append(key)
            self.policy.admit(ledger, key, size, expires_at)

        def kept(ledger: _Ledger) -> bool:  # the policy may evict the newcomer itself (ttl)
            return ledger.meta(key) is not None

        for _ in range(3):
            try:
                return self._write(insert, check=kept)
            except lmdb.MapFullError:
                if not self._make_room():
                    break
        log.warning("could not store a %d-byte record: the LMDB map stays full", len(value))
        return False

    def _make_room(self) -> bool:
        """After MDB_MAP_FULL: free the slots of dead readers (they pin freed pages), then
        evict a tenth of what is stored, a few entries per transaction (a full map has
        little room even for the pages a delete rewrites)."""
        h = self._handle or self._open()
        h.env.reader_check()
        with h.env.begin() as txn:
            stored = sum(_read_u64(txn, name, h.totals) for name in (b"bytes0", b"bytes1"))
        target = int(stored * (1 - _EVICT_ON_FULL))
        log.debug("LMDB map full; evicting down to %d bytes", target)
        for batch in (16, 1):
            try:
                while not self._write(lambda ledger: None, target=target, limit=batch,
                                      check=lambda ledger: ledger.total_bytes <= target):
                    pass
                return True
            except lmdb.MapFullError:
                continue
        return False

    def _write(self, change: Callable[[_Ledger], None], target: int | None = None,
               check: Callable[[_Ledger], bool] = lambda ledger: True,
               limit: int | None = None) -> bool:
        """One write transaction: pending hits, ``change``, eviction down to budget (at
        most ``limit`` entries); then ``check`` of the result, still inside it."""
        h = self._handle or self._open()
        touched, self._touched = self._touched, {}
        with h.env.begin(write=True) as txn:
            ledger = _Ledger(h, txn)
            for hit_key, hits in touched.items():
                self.policy.touch(ledger, hit_key, hits)
            change(ledger)
            self._evict(ledger, self.max_bytes if target is None else target, limit)
            ledger.save()
            kept = check(ledger)
        if ledger.changed:  # after the commit (generations.py)
            self.generations.bump(ledger.changed)
        return kept

    def _evict(self, ledger: _Ledger, target: int, limit: int | None) -> None:
        evicted = 0
        while ledger.total_bytes > target or (self.max_entries is not None
                                              and ledger.entries() > self.max_entries):
            victim = self.policy.victim(ledger)
            if victim is None or (limit is not None and evicted >= limit):
                return
            ledger.drop(victim)
            ledger.txn.delete(victim, db=ledger.h.records)
            ledger.changed.append(victim)
            ledger.counts[b"evictions"] += 1
            evicted += 1

    def delete(self, key: bytes) -> bool:
        found = []

        def remove(ledger: _Ledger) -> None:
            ledger.drop(key)
            found.append(ledger.txn.delete(key, db=ledger.h.records))
            ledger.changed.append(key)

        self._write(remove)
        return found[0]

    def clear(self) -> int:
        h = self._handle or self._open()
        self._touched = {}
        try:
            return self._clear(h)
        finally:
            self.generations.bump_all()

    def _clear(self, h: _Env) -> int:
        try:
            return self._drop_all(h)
        except lmdb.MapFullError:
            # Dropping whole databases rewrites the free list; with a full map, delete the
            # records in small transactions first, then drop what is left.
            h.env.reader_check()
            while True:
                with h.env.begin(write=True, db=h.records) as txn:
                    keys = [bytes(k) for k, _ in zip(txn.cursor().iternext(values=False),
                                                     range(64))]
                    for key in keys:
                        txn.delete(key)
                if not keys:
                    return self._drop_all(h)

    @staticmethod
    def _drop_all(h: _Env) -> int:
        with h.env.begin(write=True) as txn:
            count = _read_u64(txn, b"entries", h.totals)
            for db in (h.records, h.meta, h.order, h.ghosts, h.ghost_order):
                txn.drop(db, delete=False)
            for name in _COUNTERS:
                if name not in (b"evictions", b"seq"):
                    txn.put(name, _U64.pack(0), db=h.totals)
        return count

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, record), from one read transaction (a consistent snapshot)."""
        h = self._handle or self._open()
        with h.env.begin(db=h.records) as txn:
            yield from txn.cursor().iternext(keys=True, values=True)

    def stats(self) -> dict[str, int]:
        h = self._handle or self._open()
        with h.env.begin() as txn:
            counts = {name: _read_u64(txn, name, h.totals) for name in _COUNTERS}
        return {"entries": counts[b"entries"], "bytes": counts[b"bytes0"] + counts[b"bytes1"],
                "evictions": counts[b"evictions"]}

    def close(self) -> None:
        with _envs_lock:
            handle = _envs.pop(self.path, None)
            for store in _stores:
                if store.path == self.path:
                    store._handle = None
        if handle is not None:
            handle.env.close()
        self.generations.close()
