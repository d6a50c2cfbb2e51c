"""Eviction policies on both backends: who goes first, scan resistance, batched hits."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from benchmarks.eviction import miss_ratio, zipf_trace
from fic_middleware.eviction import POLICIES, MemoryLedger
from fic_middleware.storage import Storage
from fic_middleware.storage.lmdb_store import LMDBStore, disk_size
from fic_middleware.storage.memory_store import MemoryStore

SIZE = 100  # bytes per value; budgets below are counted in values


def k(name: str | int) -> bytes:
    return str(name).encode().ljust(16, b".")


def raw(key: bytes, value: Any) -> bytes:
    return bytes(value)


@pytest.fixture(params=["memory", "lmdb"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[..., Storage]]:
    made: list[Storage] = []

    def make(policy: str, values: int, **kw: Any) -> Storage:
        store: Storage
        if request.param == "memory":
            store = MemoryStore(max_bytes=values * SIZE, policy=policy, **kw)
        else:
            store = LMDBStore(str(tmp_path / f"{policy}{len(made)}"),
                              max_bytes=values * disk_size(SIZE), policy=policy, **kw)
        made.append(store)
        return store

    yield make
    for store in made:
        store.close()


def held(store: Storage, names: Any) -> set[str]:
    return {str(n) for n in names if store.get(k(n), raw) is not None}


def fill(store: Storage, names: Any, expires: Callable[[Any], float] = lambda n: 0.0) -> None:
    for name in names:
        assert store.put(k(name), bytes(SIZE), expires(name))


def test_fifo_ignores_hits(make_store: Callable[..., Storage]) -> None:
    store = make_store("fifo", 3)
    fill(store, "abc")
    store.get(k("a"), raw)
    fill(store, "d")
    assert held(store, "abcd") == {"b", "c", "d"}


def test_lru_keeps_what_was_hit(make_store: Callable[..., Storage]) -> None:
    store = make_store("lru", 3)
    fill(store, "abc")
    store.get(k("a"), raw)
    fill(store, "d")
    assert held(store, "abcd") == {"a", "c", "d"}


def test_ttl_evicts_the_soonest_expiry_first(make_store: Callable[..., Storage]) -> None:
    store = make_store("ttl", 3)
    expiry = {"a": 3000.0, "b": 1000.0, "c": 2000.0, "d": 4000.0}
    fill(store, "abc", expiry.__getitem__)
    fill(store, "d", expiry.__getitem__)
    assert held(store, "abcd") == {"a", "c", "d"}
    assert store.put(k("e"), bytes(SIZE), 500.0) is False  # already the soonest: it goes itself
    assert held(store, "acde") == {"a", "c", "d"}


def test_s3fifo_resists_a_scan(make_store: Callable[..., Storage]) -> None:
    """A key hit twice survives a scan of one-time keys that flushes LRU."""
    for policy, survives in [("s3fifo", True), ("lru", False)]:
        store = make_store(policy, 20)
        fill(store, ["hot"])
        store.get(k("hot"), raw)
        store.get(k("hot"), raw)
        fill(store, range(100))  # one-time keys, five times the capacity
        assert (store.get(k("hot"), raw) is not None) is survives, policy


def test_s3fifo_ghost_brings_a_returning_key_to_main(make_store: Callable[..., Storage]) -> None:
    store = make_store("s3fifo", 20)
    fill(store, ["back"])
    fill(store, range(30))  # "back" is evicted from the small queue, remembered as a ghost
    assert store.get(k("back"), raw) is None
    fill(store, ["back"])  # returns: straight to main
    fill(store, range(100, 130))  # another scan through the small queue
    assert store.get(k("back"), raw) is not None


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_budget_holds_under_churn(make_store: Callable[..., Storage], policy: str) -> None:
    store = make_store(policy, 50, max_entries=40)
    rng = random.Random(7)
    for i in range(600):
        store.put(k(rng.randrange(200)), bytes(rng.randrange(1, 2 * SIZE)), float(rng.randrange(10**6)))
        if i % 3 == 0:
            store.get(k(rng.randrange(200)), raw)
        stats = store.stats()
        assert stats["bytes"] <= store.max_bytes and stats["entries"] <= 40  # type: ignore[attr-defined]
    assert stats["evictions"] > 0


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_backends_make_the_same_decisions(tmp_path: Path, policy: str) -> None:
    rng = random.Random(3)
    trace = [rng.choice(["get", "put"]) + f":{int(rng.paretovariate(1.2)) % 60}" for _ in range(800)]
    survivors = []
    for store in (MemoryStore(max_bytes=20 * SIZE, policy=policy),
                  LMDBStore(str(tmp_path), max_bytes=20 * disk_size(SIZE), policy=policy)):
        for step in trace:
            op, name = step.split(":")
            if op == "put":
                store.put(k(name), bytes(SIZE), float(name))
            else:
                store.get(k(name), raw)
        survivors.append(held(store, range(60)))
        store.close()
    assert survivors[0] == survivors[1]


def test_lmdb_hits_do_not_open_write_transactions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LMDBStore(str(tmp_path), max_bytes=100 * SIZE, policy="lru")
    fill(store, range(10))
    env = store._handle.env  # type: ignore[union-attr]
    writes = []
    real_begin = env.begin

    class Spy:
        def begin(self, **kw: Any) -> Any:
            writes.append(kw.get("write", False))
            return real_begin(**kw)

        def __getattr__(self, name: str) -> Any:
            return getattr(env, name)

    monkeypatch.setattr(store._handle, "env", Spy())
    for _ in range(50):
        for i in range(10):
            store.get(k(i), raw)
    assert writes and not any(writes)
    fill(store, ["new"])  # the batched hits go in with the next write
    assert writes.count(True) == 1
    store.close()


def test_s3fifo_misses_no_more_than_lru_on_a_zipf_trace() -> None:
    trace = zipf_trace(5000, 40_000, 1.0, seed=11)
    ratios = {p: miss_ratio(p, 250, trace) for p in ("lru", "s3fifo", "fifo")}
    assert ratios["s3fifo"] <= ratios["lru"] <= ratios["fifo"] + 0.01, ratios


def test_memory_ledger_compacts_stale_heap_items() -> None:
    ledger = MemoryLedger()
    policy = POLICIES["lru"](10**9)
    policy.admit(ledger, b"a", 1, 0.0)
    for _ in range(5000):
        policy.touch(ledger, b"a", 1)
    assert ledger.heap_items() < 2000
    assert ledger.oldest(0) == b"a"
