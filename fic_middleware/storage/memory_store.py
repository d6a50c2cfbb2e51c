"""A bounded in-process store, for tests and tiny deployments (not shared between workers)."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class MemoryStore:
    """Insertion-ordered dict; the oldest entries are evicted first."""

    def __init__(self, *, max_bytes: int, max_entries: int | None = None) -> None:
        self.max_bytes = max_bytes
        self.max_entries = max_entries
        self._data: OrderedDict[bytes, bytes] = OrderedDict()
        self._bytes = 0
        self._evictions = 0
        self._lock = threading.Lock()

    def get(self, key: bytes, decode: Callable[[bytes, memoryview | bytes], T]) -> T | None:
        # Fast path: a dict lookup is atomic under the GIL, no lock needed.
        value = self._data.get(key)
        return None if value is None else decode(key, value)

    def put(self, key: bytes, value: bytes) -> bool:
        if len(value) > self.max_bytes:
            return False
        with self._lock:
            self._pop(key)
            self._data[key] = value
            self._bytes += len(value)
            while self._bytes > self.max_bytes or (
                    self.max_entries is not None and len(self._data) > self.max_entries):
                _, old = self._data.popitem(last=False)
                self._bytes -= len(old)
                self._evictions += 1
        return True

    def _pop(self, key: bytes) -> bool:
        old = self._data.pop(key, None)
        if old is None:
            return False
        self._bytes -= len(old)
        return True

    def delete(self, key: bytes) -> bool:
        with self._lock:
            return self._pop(key)

    def clear(self) -> int:
        with self._lock:
            count = len(self._data)
            self._data.clear()
            self._bytes = 0
            return count

    def stats(self) -> dict[str, int]:
        return {"entries": len(self._data), "bytes": self._bytes, "evictions": self._evictions}

    def close(self) -> None:
        """Nothing to release."""
