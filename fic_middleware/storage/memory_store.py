"""A bounded in-process store, for tests and tiny deployments (not shared between workers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TypeVar

from ..eviction import MAIN, POLICIES, SMALL, MemoryLedger
from ..generations import Generations

T = TypeVar("T")
# Distinct keys hit between two flushes of the hit counts into the policy.
_TOUCH_BATCH = 4096


class MemoryStore:
    """A dict of records, evicted by the configured policy beyond the budget."""

    def __init__(self, *, max_bytes: int, max_entries: int | None = None,
                 policy: str = "lru") -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self.policy = POLICIES[policy](max_bytes)
        self._track = self.policy.tracks_hits
        self._data: dict[bytes, bytes] = {}
        self._ledger = MemoryLedger()
        self._touched: dict[bytes, int] = {}
        self._evictions = 0
        self._lock = threading.Lock()
        self.generations = Generations(None)  # the memo's stamps (generations.py)

    def get(self, key: bytes, decode: Callable[[bytes, memoryview | bytes], T]) -> T | None:
        # Fast path: a dict lookup, atomic under the GIL; the hit is counted, not applied.
        value = self._data.get(key)
        if value is None:
            return None
        if self._track:
            self._touched[key] = self._touched.get(key, 0) + 1
            if len(self._touched) >= _TOUCH_BATCH:
                with self._lock:
                    self._flush()
        return decode(key, value)

    def _flush(self) -> None:
        touched, self._touched = self._touched, {}
        for key, hits in touched.items():
            self.policy.touch(self._ledger, key, hits)

    def put(self, key: bytes, value: bytes, expires_at: float = 0.0) -> bool:
        if len(value) > self.max_bytes:
            return False
        changed = [key]
        with self._lock:
            self._flush()
            self._data[key] = value
            self.policy.admit(self._ledger, key, len(value), expires_at)
            while self._over_budget():
                victim = self.policy.victim(self._ledger)
                if victim is None:
                    break
                self._ledger.drop(victim)
                del self._data[victim]
                changed.append(victim)
                self._evictions += 1
            self.generations.bump(changed)
        return key in self._data

    def _over_budget(self) -> bool:
        return (self._bytes() > self.max_bytes
                or (self.max_entries is not None and len(self._data) > self.max_entries))

    def _bytes(self) -> int:
        return self._ledger.queue_bytes(MAIN) + self._ledger.queue_bytes(SMALL)

    def delete(self, key: bytes) -> bool:
        with self._lock:
            self._ledger.drop(key)
            found = self._data.pop(key, None) is not None
            self.generations.bump((key,))
            return found

    def clear(self) -> int:
        with self._lock:
            count = len(self._data)
            self._data.clear()
            self._ledger = MemoryLedger()
            self._touched.clear()
            self.generations.bump_all()
            return count

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, record), from a copy taken now."""
        yield from list(self._data.items())

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._data), "bytes": self._bytes(), "evictions": self._evictions}

    def close(self) -> None:
        """Nothing to release."""
