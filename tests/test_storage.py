"""The storage interface, written once and run over every backend."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest

from fic_middleware.storage import Storage
from fic_middleware.storage.lmdb_store import LMDBStore, disk_size
from fic_middleware.storage.memory_store import MemoryStore

KEY = b"k" * 16


def raw(key: bytes, value: Any) -> bytes:
    return bytes(value)


def cost(store: Storage, length: int) -> int:
    """What a value of ``length`` bytes counts against the budget in this backend."""
    return disk_size(length) if isinstance(store, LMDBStore) else length


def key(i: int) -> bytes:
    return i.to_bytes(16, "big")


@pytest.fixture(params=["memory", "lmdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Storage]]:
    made: list[Storage] = []

    def make(max_bytes: int = 1 << 20, max_entries: int | None = None) -> Storage:
        store: Storage
        if request.param == "memory":
            store = MemoryStore(max_bytes=max_bytes, max_entries=max_entries)
        else:
            store = LMDBStore(str(tmp_path), max_bytes=max_bytes, max_entries=max_entries)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def test_get_missing_is_none(make_store: Callable[..., Storage]) -> None:
    assert make_store().get(KEY, raw) is None


def test_put_get_delete(make_store: Callable[..., Storage]) -> None:
    store = make_store()
    assert store.put(KEY, b"value")
    assert store.get(KEY, raw) == b"value"
    assert store.delete(KEY) is True
    assert store.get(KEY, raw) is None
    assert store.delete(KEY) is False


def test_overwrite_counts_once(make_store: Callable[..., Storage]) -> None:
    store = make_store()
    store.put(KEY, b"a" * 10)
    store.put(KEY, b"b" * 20)
    assert store.get(KEY, raw) == b"b" * 20
    assert store.stats() == {"entries": 1, "bytes": cost(store, 20), "evictions": 0}


def test_decode_sees_the_stored_bytes(make_store: Callable[..., Storage]) -> None:
    store = make_store()
    store.put(KEY, b"abc")
    assert store.get(KEY, lambda k, buf: k + bytes(buf)[::-1]) == KEY + b"cba"


def test_byte_budget_evicts_oldest_first(make_store: Callable[..., Storage]) -> None:
    store = make_store()
    budget = 10 * cost(store, 100)
    store = make_store(max_bytes=budget)
    for i in range(25):
        store.put(key(i), bytes(100))
    stats = store.stats()
    assert stats["bytes"] <= budget and stats["entries"] == 10
    assert stats["evictions"] == 15
    assert store.get(key(0), raw) is None
    assert store.get(key(24), raw) is not None


def test_entry_budget(make_store: Callable[..., Storage]) -> None:
    store = make_store(max_entries=3)
    for i in range(5):
        store.put(key(i), b"x")
    assert store.stats()["entries"] == 3
    assert [store.get(key(i), raw) is not None for i in range(5)] == [False, False, True, True, True]


def test_value_larger_than_the_budget_is_refused(make_store: Callable[..., Storage]) -> None:
    store = make_store(max_bytes=100)
    assert store.put(KEY, bytes(101)) is False
    assert store.get(KEY, raw) is None
    assert store.put(KEY, bytes(100)) is (not isinstance(store, LMDBStore))  # + index cost


def test_clear(make_store: Callable[..., Storage]) -> None:
    store = make_store()
    for i in range(4):
        store.put(key(i), b"x")
    assert store.clear() == 4
    assert store.stats()["entries"] == 0 and store.get(key(1), raw) is None
    store.put(KEY, b"again")
    assert store.stats()["entries"] == 1


def test_lmdb_is_shared_by_two_stores_in_one_process(tmp_path: Path) -> None:
    a = LMDBStore(str(tmp_path), max_bytes=1 << 20)
    b = LMDBStore(str(tmp_path), max_bytes=1 << 20)
    a.put(KEY, b"shared")
    assert b.get(KEY, raw) == b"shared"
    a.close()
    assert b.get(KEY, raw) == b"shared"  # reopens lazily
    b.close()


def test_lmdb_persists_after_close(tmp_path: Path) -> None:
    store = LMDBStore(str(tmp_path), max_bytes=1 << 20)
    store.put(KEY, b"kept")
    store.close()
    assert LMDBStore(str(tmp_path), max_bytes=1 << 20).get(KEY, raw) == b"kept"


def test_lmdb_data_file_stays_within_the_map(tmp_path: Path) -> None:
    """Churn several times the budget through the store: the file never outgrows the map."""
    store = LMDBStore(str(tmp_path), max_bytes=1 << 20)
    for i in range(400):
        assert store.put(key(i), os.urandom(10_000 + i))
    assert store.stats()["bytes"] <= 1 << 20
    assert os.path.getsize(tmp_path / "data.mdb") <= store.map_size
    store.close()


def test_lmdb_map_full_evicts_instead_of_failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LMDBStore(str(tmp_path), max_bytes=1 << 20)
    for i in range(5):
        store.put(key(i), bytes(1000))
    real_write = store._write
    calls: list[int | None] = []

    def full_once(change: Any, target: int | None = None, **kw: Any) -> bool:
        calls.append(target)
        if len(calls) == 1:
            raise lmdb.MapFullError("simulated")
        return real_write(change, target, **kw)

    monkeypatch.setattr(store, "_write", full_once)
    assert store.put(KEY, b"fits after eviction")
    assert store.get(KEY, raw) == b"fits after eviction"
    assert calls[1] is not None and calls[1] < store.max_bytes  # evicted below the budget first
    store.close()


def test_lmdb_survives_fork(tmp_path: Path) -> None:
    """A store used before fork() (gunicorn --preload) works in the child."""
    store = LMDBStore(str(tmp_path), max_bytes=1 << 20)
    store.put(KEY, b"parent")
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            ok = store.get(KEY, raw) == b"parent" and store.put(key(2), b"child")
            os.write(write, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    assert os.read(read, 1) == b"1"
    os.close(read)
    os.close(write)
    assert store.get(key(2), raw) == b"child"
    store.close()
