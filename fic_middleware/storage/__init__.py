"""The storage interface: a bounded map of fixed-length keys to record bytes.

Backends know nothing of HTTP or records: ``get`` hands the key and the stored bytes to a
``decode`` callable while they are valid (for LMDB, a zero-copy view inside a read-only
transaction) and returns its result. ``put`` evicts to stay within ``max_bytes``/``max_entries``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol, TypeVar

if TYPE_CHECKING:
    from ..config import Config
    from ..generations import Generations

T = TypeVar("T")


class Storage(Protocol):
    # Stamped after every change of a key, in every process that shares the store.
    generations: Generations

    def get(self, key: bytes, decode: Callable[[bytes, memoryview | bytes], T]) -> T | None:
        """``decode(key, stored bytes)``, or None when the key is absent."""

    def put(self, key: bytes, value: bytes, expires_at: float = 0.0) -> bool:
        """Store ``value`` (fresh until ``expires_at``, for the ttl policy), evicting by the
        policy as needed; False if it could not be stored."""

    def delete(self, key: bytes) -> bool:
        """Remove ``key``; True if it was there."""

    def clear(self) -> int:
        """Remove everything; the number of entries removed."""

    def scan(self) -> Iterator[tuple[bytes, bytes]]:
        """Every (key, record) stored, for maintenance (verify, gc): not a hot path."""

    def stats(self) -> dict[str, int]:
        """``{"entries": n, "bytes": n, "evictions": n}`` as this backend counts them."""

    def close(self) -> None:
        """Release files and handles (the store may be used again: it reopens lazily)."""


# A remembered 404 is a header and no body: this much of the budget per entry.
_NEGATIVE_ENTRY_BYTES = 512


def open_negative_storage(config: Config) -> Storage:
    """The store of remembered origin 404/410s: the backend the config names, with a small
    budget of its own (``negative_max_entries``), so that requests for missing images evict
    each other, never real ones."""
    budget = max(config.negative_max_entries, 1) * _NEGATIVE_ENTRY_BYTES
    if config.backend == "memory":
        from .memory_store import MemoryStore
        return MemoryStore(max_bytes=budget, max_entries=config.negative_max_entries,
                           policy="fifo")
    from .lmdb_store import LMDBStore
    assert config.cache_dir is not None
    return LMDBStore(os.path.join(config.cache_dir, "negative"), max_bytes=budget,
                     max_entries=config.negative_max_entries, policy="fifo")


def open_storage(config: Config) -> Storage:
    """The backend the config names."""
    if config.backend == "memory":
        from .memory_store import MemoryStore
        return MemoryStore(max_bytes=config.max_bytes, max_entries=config.max_entries,
                           policy=config.eviction)
    from .lmdb_store import LMDBStore
    assert config.cache_dir is not None  # Config.load requires it for lmdb
    return LMDBStore(config.cache_dir, max_bytes=config.max_bytes, max_entries=config.max_entries,
                     policy=config.eviction)
