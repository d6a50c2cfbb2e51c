"""A circuit breaker per origin (scheme, host, port), shared by every worker of a host.

nginx's ``max_fails``/``fail_timeout`` is the model: after ``breaker_failures`` consecutive
failures of one origin (it could not be reached, timed out, or answered 500/502/503/504),
its circuit opens for ``breaker_cooldown`` seconds, and a miss for it fails at once (a stale
copy if one may be served, else 503 with Retry-After) instead of holding a worker for
``connect_timeout`` per attempt. Once the cool-down is over, one request (one thread of one
process) probes the origin, the others still failing fast: an answer closes the circuit, a
failure opens it for another cool-down. Any answer (a 200, a 304, a 4xx) resets the count.

The state lives in ``{cache_dir}/breaker``, a table of fixed slots mapped in memory by every
worker (one slot per origin, found by a hash of its name, open addressing). Readers take no
lock (a torn read costs at most one fast failure too many or one fetch too many); changes
are made under an ``fcntl`` lock of the file, which the kernel drops if its holder dies. A
probe holds the circuit for ``probe_lease`` seconds, so a probe whose worker died is retried.
Without a cache directory (the memory backend) the table is private to the process.

Only requests that go to the origin look here: a hit never does, and a miss of a healthy
origin reads one slot and writes nothing.

Slot layout (little-endian, 128 bytes)::

    16s key      BLAKE2b-128 of the origin; zero: a free slot
    B   state    0 closed, 1 open, 2 half-open (a probe is out)
    3x
    I   failures consecutive failures
    d   until    open: fail fast until then (time.time()); half-open: the probe's lease
    d   updated  last change, to reuse the oldest closed slot when the table is full
    Q   trips    times the circuit opened from closed
    H   size     bytes of name used
    70s name     the origin, for /stats and /metrics
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

from . import forks
from .errors import (
    BadRequest, Forbidden, NotFound, OriginDown, OriginError, OriginRefused, OriginTimeout,
    OriginUnavailable, Overloaded,
)

log = logging.getLogger("fic_middleware")

CLOSED, OPEN, HALF_OPEN = 0, 1, 2
STATE_NAMES = ("closed", "open", "half-open")
_MAGIC = b"ficbrk1\0"
_SLOT = struct.Struct("<16sB3xIddQH70s")
_SLOTS = 256  # origins tracked at once per host; beyond it, an origin goes unguarded
_HEADER = 64
_SIZE = _HEADER + _SLOT.size * _SLOTS
_FREE = bytes(16)
_NAME = 70
# An origin answered: whatever it said about the image, it is up.
_ANSWERED = (NotFound, OriginRefused, OriginError)
# Neither a success nor a failure of the origin: a probe that ends so hands over at once.
_NO_VERDICT = (Overloaded, Forbidden, BadRequest)


def origin_of(url: str) -> str:
    """``scheme://host:port`` of an absolute URL (the unit nginx's max_fails counts by)."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = parts.hostname or ""
    return f"{parts.scheme}://{f'[{host}]' if ':' in host else host}:{port}"


class Breaker:
    """Circuits of the origins of a host (or a process, when ``path`` is None).

    :param path: the shared table file, or None for a table of this process only.
    :param failures: consecutive failures that open a circuit; 0 turns the breaker off.
    :param cooldown: seconds an open circuit fails misses at once before one probe.
    :param probe_lease: seconds a probe holds the circuit (the longest a fetch may take).
    """

    def __init__(self, path: str | None, failures: int, cooldown: float, probe_lease: float,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self.failures = failures
        self.cooldown = cooldown
        self.probe_lease = probe_lease
        self.clock = clock
        self._map: mmap.mmap | None = None
        self._fd = -1
        self._lock = threading.Lock()
        self._full_logged = False
        forks.register(self)

    @contextlib.contextmanager
    def guard(self, url: str) -> Iterator[None]:
        """Around one origin fetch of ``url``: raises OriginDown at once while its circuit
        is open, and counts how the fetch ended."""
        if not self.failures:
            yield
            return
        origin = origin_of(url)
        key = hashlib.blake2b(origin.encode(), digest_size=16).digest()
        probe = self._admit(key)
        try:
            yield
        except (OriginUnavailable, OriginTimeout):
            self._failed(key, origin, probe)
            raise
        except _NO_VERDICT:
            if probe:
                self._hand_over(key)
            raise
        except _ANSWERED:
            self._answered(key, probe)
            raise
        except BaseException:
            if probe:
                self._hand_over(key)
            raise
        self._answered(key, probe)

    # --- transitions ---

    def _admit(self, key: bytes) -> bool:
        """Whether this fetch is the probe of a half-open circuit; OriginDown if it may
        not go at all. A closed circuit is read without a lock or a write."""
        table = self._table()
        index = self._find(table, key)
        if index is None or _SLOT.unpack_from(table, _offset(index))[1] == CLOSED:
            return False
        with self._locked() as table:
            index = self._find(table, key)
            if index is None:
                return False
            slot = list(_SLOT.unpack_from(table, _offset(index)))
            now = self.clock()
            if slot[1] == CLOSED:
                return False
            if now < slot[3] and slot[3] - now <= max(self.cooldown, self.probe_lease) + 1:
                # Still cooling down, or another request is probing: fail fast.
                raise OriginDown("the origin is failing; try again later",
                                 retry_after=max(1, math.ceil(slot[3] - now)))
            slot[1], slot[3], slot[4] = HALF_OPEN, now + self.probe_lease, now
            _SLOT.pack_into(table, _offset(index), *slot)
            log.info("origin %s: probing after its cool-down", _name(slot))
            return True

    def _failed(self, key: bytes, origin: str, probe: bool) -> None:
        with self._locked() as table:
            index = self._claim(table, key, origin)
            if index is None:
                return
            slot = list(_SLOT.unpack_from(table, _offset(index)))
            now = self.clock()
            slot[2] += 1
            slot[4] = now
            if slot[1] == CLOSED and slot[2] >= self.failures:
                slot[1], slot[3] = OPEN, now + self.cooldown
                slot[5] += 1
                log.warning("origin %s: %d failures in a row; misses fail fast for %gs",
                            origin, slot[2], self.cooldown)
            elif probe and slot[1] == HALF_OPEN:
                slot[1], slot[3] = OPEN, now + self.cooldown
                log.warning("origin %s: the probe failed; failing fast for %gs more",
                            origin, self.cooldown)
            _SLOT.pack_into(table, _offset(index), *slot)

    def _answered(self, key: bytes, probe: bool) -> None:
        """The origin answered: count from zero, close the circuit. Nothing to write for
        an origin that never failed (the common miss)."""
        table = self._table()
        index = self._find(table, key)
        if index is None:
            return
        _, state, failures, *_ = _SLOT.unpack_from(table, _offset(index))
        if state == CLOSED and failures == 0:
            return
        with self._locked() as table:
            slot = list(_SLOT.unpack_from(table, _offset(index)))
            if slot[0] != key:
                return
            if slot[1] != CLOSED:
                log.warning("origin %s answered%s: circuit closed", _name(slot),
                            " the probe" if probe else "")
            slot[1], slot[2], slot[3], slot[4] = CLOSED, 0, 0.0, self.clock()
            _SLOT.pack_into(table, _offset(index), *slot)

    def _hand_over(self, key: bytes) -> None:
        """A probe that got no verdict: the next request probes instead."""
        with self._locked() as table:
            index = self._find(table, key)
            if index is None:
                return
            slot = list(_SLOT.unpack_from(table, _offset(index)))
            if slot[1] == HALF_OPEN:
                slot[1], slot[3] = OPEN, self.clock()
                _SLOT.pack_into(table, _offset(index), *slot)

    def states(self) -> list[dict[str, Any]]:
        """Every origin that has failed since its slot was taken, for /stats and /metrics."""
        if not self.failures:
            return []
        table = self._table()
        now = self.clock()
        found = []
        for index in range(_SLOTS):
            slot = _SLOT.unpack_from(table, _offset(index))
            if slot[0] == _FREE:
                continue
            state = slot[1]
            found.append({"origin": _name(slot), "state": STATE_NAMES[state],
                          "failures": slot[2], "trips": slot[5],
                          "retry_after": max(0, math.ceil(slot[3] - now)) if state else 0})
        return sorted(found, key=lambda s: (s["state"] == "closed", s["origin"]))

    # --- the table ---

    def after_fork(self) -> None:
        # fcntl locks belong to the process, and a private table is not shared: the child
        # maps its own (closing the inherited descriptor releases nothing of the parent's).
        if self._fd >= 0:
            os.close(self._fd)
        self._map, self._fd = None, -1
        self._lock = threading.Lock()

    def _table(self) -> mmap.mmap:
        table = self._map
        if table is None:
            with self._lock:
                if self._map is None:
                    self._open()
                table = self._map
            assert table is not None
        return table

    def _open(self) -> None:
        if self.path is None:
            self._map = mmap.mmap(-1, _SIZE, flags=mmap.MAP_PRIVATE)
            self._map[:len(_MAGIC)] = _MAGIC
            self._fd = -1
        else:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX)
                if os.fstat(fd).st_size != _SIZE or os.pread(fd, len(_MAGIC), 0) != _MAGIC:
                    # New, or written by another release: start from closed circuits.
                    os.ftruncate(fd, 0)
                    os.ftruncate(fd, _SIZE)
                    os.pwrite(fd, _MAGIC, 0)
                self._map = mmap.mmap(fd, _SIZE)
            finally:
                fcntl.lockf(fd, fcntl.LOCK_UN)
            self._fd = fd

    @contextlib.contextmanager
    def _locked(self) -> Iterator[mmap.mmap]:
        table = self._table()
        with self._lock:
            if self._fd < 0:
                yield table
                return
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield table
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    @staticmethod
    def _find(table: mmap.mmap, key: bytes) -> int | None:
        start = int.from_bytes(key[:4], "little") % _SLOTS
        for step in range(_SLOTS):
            index = (start + step) % _SLOTS
            found = table[_offset(index):_offset(index) + 16]
            if found == key:
                return index
            if found == _FREE:
                return None
        return None

    def _claim(self, table: mmap.mmap, key: bytes, origin: str) -> int | None:
        """The slot of ``key``, taken if need be (under the lock): a free one, else the
        closed one changed longest ago. Slots are never freed, so probe chains stay whole."""
        index = self._find(table, key)
        if index is not None:
            return index
        start = int.from_bytes(key[:4], "little") % _SLOTS
        oldest: tuple[float, int] | None = None
        for step in range(_SLOTS):
            candidate = (start + step) % _SLOTS
            slot = _SLOT.unpack_from(table, _offset(candidate))
            if slot[0] == _FREE:
                index = candidate
                break
            if slot[1] == CLOSED and (oldest is None or slot[4] < oldest[0]):
                oldest = (slot[4], candidate)
        else:
            if oldest is None:
                if not self._full_logged:
                    log.warning("circuit breaker table full (%d origins failing): "
                                "%s is not guarded", _SLOTS, origin)
                    self._full_logged = True
                return None
            index = oldest[1]
        name = origin.encode()[:_NAME]
        _SLOT.pack_into(table, _offset(index), key, CLOSED, 0, 0.0, self.clock(), 0,
                        len(name), name)
        return index

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._fd >= 0:
            os.close(self._fd)
        self._map, self._fd = None, -1


def _offset(index: int) -> int:
    return _HEADER + index * _SLOT.size


def _name(slot: tuple[Any, ...] | list[Any]) -> str:
    return bytes(slot[7][:slot[6]]).decode(errors="replace")
