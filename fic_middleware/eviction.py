"""Eviction policies, written once against a small :class:`Ledger` of ordered queues.

A ledger keeps, per stored key, a :class:`Meta` (queue, position, size, hit count) and, per
queue, the keys in position order, so that "the oldest key of a queue" costs O(log n). The
LMDB store implements it with named databases inside its write transaction, the memory
store with dicts and heaps. Policies never scan: each insert evicts by popping queue heads.

Hits reach a policy in batches (:meth:`Policy.touch`), never as a write per hit.

- ``fifo``: evict in insertion order.
- ``lru``: a hit moves the key to the tail of the queue (applied when the batch is flushed).
- ``ttl``: the queue is ordered by expiry time: expired entries go first, then the soonest.
- ``s3fifo``: S3-FIFO (Yang et al., SOSP 2023): new keys enter a small FIFO (10% of the
  budget); a key hit while there moves to the main FIFO, others are evicted and remembered
  in a ghost FIFO, and a key that comes back while remembered goes straight to main. Main
  gives keys with hits another round (their count decremented) before evicting them.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from typing import NamedTuple, Protocol

MAIN = 0
SMALL = 1
MAX_FREQ = 3


class Meta(NamedTuple):
    queue: int
    order: int  # position within the queue: sequence number, or expiry in ms for ttl
    seq: int  # tie-break and identity of this position
    size: int
    freq: int


class Ledger(Protocol):
    def meta(self, key: bytes) -> Meta | None: ...

    def entries(self) -> int: ...

    def place(self, key: bytes, meta: Meta) -> None:
        """Set ``key``'s meta, moving it to its (new) queue position."""

    def drop(self, key: bytes) -> None:
        """Forget ``key`` (meta and queue position)."""

    def oldest(self, queue: int) -> bytes | None: ...

    def next_seq(self) -> int: ...

    def queue_bytes(self, queue: int) -> int: ...

    def ghost_add(self, key: bytes, limit: int) -> None:
        """Remember an evicted key, keeping at most ``limit`` ghosts."""

    def ghost_pop(self, key: bytes) -> bool:
        """Forget a remembered key; True if it was remembered."""


class Policy:
    """FIFO. Subclasses change where keys go and what a hit does."""

    name = "fifo"
    tracks_hits = False

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes

    def admit(self, ledger: Ledger, key: bytes, size: int, expires_at: float) -> None:
        seq = ledger.next_seq()
        ledger.place(key, Meta(MAIN, seq, seq, size, 0))

    def touch(self, ledger: Ledger, key: bytes, hits: int) -> None:
        """Apply ``hits`` batched hits on ``key`` (which may be gone by now)."""

    def victim(self, ledger: Ledger) -> bytes | None:
        """The next key to evict (the policy may reorder others on the way)."""
        return ledger.oldest(MAIN)


class LRU(Policy):
    name = "lru"
    tracks_hits = True

    def touch(self, ledger: Ledger, key: bytes, hits: int) -> None:
        meta = ledger.meta(key)
        if meta is not None:
            seq = ledger.next_seq()
            ledger.place(key, meta._replace(order=seq, seq=seq))


class TTL(Policy):
    name = "ttl"

    def admit(self, ledger: Ledger, key: bytes, size: int, expires_at: float) -> None:
        ledger.place(key, Meta(MAIN, max(0, int(expires_at * 1000)), ledger.next_seq(), size, 0))


class S3FIFO(Policy):
    name = "s3fifo"
    tracks_hits = True
    small_share = 0.1

    def admit(self, ledger: Ledger, key: bytes, size: int, expires_at: float) -> None:
        existing = ledger.meta(key)  # a refresh keeps its queue
        if existing is not None:
            queue = existing.queue
        else:
            queue = MAIN if ledger.ghost_pop(key) else SMALL
        seq = ledger.next_seq()
        ledger.place(key, Meta(queue, seq, seq, size, 0))

    def touch(self, ledger: Ledger, key: bytes, hits: int) -> None:
        meta = ledger.meta(key)
        if meta is not None and meta.freq < MAX_FREQ:
            ledger.place(key, meta._replace(freq=min(MAX_FREQ, meta.freq + hits)))

    def victim(self, ledger: Ledger) -> bytes | None:
        # Each pass either evicts or spends one hit of a key (freq <= 3): bounded, amortised O(1).
        while True:
            small = ledger.oldest(SMALL)
            main = ledger.oldest(MAIN)
            if small is not None and (main is None or ledger.queue_bytes(SMALL)
                                      > self.max_bytes * self.small_share):
                meta = ledger.meta(small)
                assert meta is not None
                if meta.freq > 0:  # hit while in the small queue: it earned a place in main
                    seq = ledger.next_seq()
                    ledger.place(small, Meta(MAIN, seq, seq, meta.size, 0))
                    continue
                # Ghosts: about as many as keys held (the paper sizes G like M).
                ledger.ghost_add(small, limit=max(1, ledger.entries()))
                return small
            if main is None:
                return None
            meta = ledger.meta(main)
            assert meta is not None
            if meta.freq > 0:  # reinsert at the tail with one hit spent
                seq = ledger.next_seq()
                ledger.place(main, meta._replace(order=seq, seq=seq, freq=meta.freq - 1))
                continue
            return main


POLICIES: dict[str, type[Policy]] = {p.name: p for p in (Policy, LRU, TTL, S3FIFO)}


class MemoryLedger:
    """Dicts and lazy-deletion heaps: O(log n) per operation, for the memory store and
    for simulations (benchmarks/eviction.py)."""

    def __init__(self) -> None:
        self._meta: dict[bytes, Meta] = {}
        self._heaps: dict[int, list[tuple[int, int, bytes]]] = {MAIN: [], SMALL: []}
        self._bytes = {MAIN: 0, SMALL: 0}
        self._ghosts: OrderedDict[bytes, None] = OrderedDict()
        self._seq = 0

    def entries(self) -> int:
        return len(self._meta)

    def meta(self, key: bytes) -> Meta | None:
        return self._meta.get(key)

    def place(self, key: bytes, meta: Meta) -> None:
        old = self._meta.get(key)
        self.drop(key)
        self._meta[key] = meta
        self._bytes[meta.queue] += meta.size
        if old is not None and old[:3] == meta[:3]:
            return  # same position (a hit count changed): the heap item still stands
        heap = self._heaps[meta.queue]
        heapq.heappush(heap, (meta.order, meta.seq, key))
        if len(heap) > 2 * len(self._meta) + 1024:  # too many stale items: rebuild
            self._heaps[meta.queue] = heap = [
                (m.order, m.seq, k) for k, m in self._meta.items() if m.queue == meta.queue]
            heapq.heapify(heap)

    def drop(self, key: bytes) -> None:
        old = self._meta.pop(key, None)
        if old is not None:  # its heap item is now stale and skipped when it surfaces
            self._bytes[old.queue] -= old.size

    def oldest(self, queue: int) -> bytes | None:
        heap = self._heaps[queue]
        while heap:
            order, seq, key = heap[0]
            meta = self._meta.get(key)
            if meta is not None and meta.queue == queue and meta.seq == seq:
                return key
            heapq.heappop(heap)
        return None

    def heap_items(self) -> int:
        """Items held by the order heaps, stale ones included: what compaction bounds."""
        return sum(len(heap) for heap in self._heaps.values())

    def next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def queue_bytes(self, queue: int) -> int:
        return self._bytes[queue]

    def ghost_add(self, key: bytes, limit: int) -> None:
        self._ghosts[key] = None
        while len(self._ghosts) > limit:
            self._ghosts.popitem(last=False)

    def ghost_pop(self, key: bytes) -> bool:
        if key in self._ghosts:
            del self._ghosts[key]
            return True
        return False
