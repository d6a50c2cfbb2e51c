"""Eviction policies: miss ratio on Zipf traces, and insert cost under eviction pressure.

    benchmarks/run eviction [--quick]

(a) Miss ratio of lru, fifo, ttl and s3fifo replaying the same Zipf-like trace (key
popularity ~ 1/rank^s) at several cache sizes, through the real policy code (the memory
ledger: the LMDB ledger makes the same decisions, tests/test_eviction.py checks that).
(b) Microseconds per insert into a full LMDB store, each insert evicting, per policy, at
two store sizes: the cost must not grow with the number of entries (O(log n)).
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from fic_middleware.eviction import POLICIES  # noqa: E402
from fic_middleware.storage.lmdb_store import LMDBStore, disk_size  # noqa: E402
from fic_middleware.storage.memory_store import MemoryStore  # noqa: E402

VALUE = 100  # bytes per entry in the miss-ratio runs: the budget counts entries


def zipf_trace(keys: int, length: int, s: float, seed: int) -> list[int]:
    rng = random.Random(seed)
    weights = [1 / (rank + 1) ** s for rank in range(keys)]
    order = list(range(keys))
    rng.shuffle(order)
    return rng.choices(order, weights, k=length)


def miss_ratio(policy: str, capacity: int, trace: list[int]) -> float:
    store = MemoryStore(max_bytes=capacity * VALUE, policy=policy)
    misses = 0
    for name in trace:
        key = name.to_bytes(16, "big")
        if store.get(key, lambda k, v: v) is None:
            misses += 1
            store.put(key, bytes(VALUE))
    return misses / len(trace)


def insert_cost(policy: str, entries: int, inserts: int, directory: str) -> float:
    """Microseconds per put into a store already full with ``entries`` small records."""
    size = 200
    store = LMDBStore(os.path.join(directory, f"{policy}-{entries}"),
                      max_bytes=entries * disk_size(size), policy=policy)
    now = time.time()

    def fill(ledger: object) -> None:  # one transaction: a commit per entry is an fsync each
        for i in range(entries):
            key = i.to_bytes(16, "big")
            ledger.txn.put(key, bytes(size), db=ledger.h.records)  # type: ignore[attr-defined]
            store.policy.admit(ledger, key, disk_size(size), now + i)  # type: ignore[arg-type]

    store._write(fill)
    rng = random.Random(1)
    started = time.perf_counter()
    for i in range(inserts):
        if i % 4 == 0:  # some hits, so lru and s3fifo have something to batch
            store.get(rng.randrange(entries).to_bytes(16, "big"), lambda k, v: None)
        store.put((entries + i).to_bytes(16, "big"), bytes(size), now + entries + i)
    elapsed = time.perf_counter() - started
    assert store.stats()["entries"] <= entries
    store.close()
    return elapsed / inserts * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    keys, length = (5_000, 50_000) if args.quick else (20_000, 300_000)
    policies = sorted(POLICIES)

    print(f"(a) miss ratio, Zipf s=1.0 over {keys:,} keys, {length:,} requests")
    trace = zipf_trace(keys, length, 1.0, seed=11)
    sizes = [keys // 100, keys // 20, keys // 10, keys // 4]
    print(f"{'cache entries':>14} " + " ".join(f"{p:>8}" for p in policies) + "   s3fifo/lru")
    for size in sizes:
        ratios = {p: miss_ratio(p, size, trace) for p in policies}
        print(f"{size:>14,} " + " ".join(f"{ratios[p]:>8.4f}" for p in policies)
              + f"   {ratios['s3fifo'] / ratios['lru']:>9.3f}")

    inserts = 300 if args.quick else 1_000
    small, large = (2_000, 20_000) if args.quick else (10_000, 200_000)
    print(f"\n(b) LMDB insert cost under eviction pressure (us per put, {inserts} puts, "
          "each evicting; includes the commit)")
    print(f"{'policy':>8} {small:>12,} {large:>12,}   large/small")
    with tempfile.TemporaryDirectory() as directory:
        for policy in policies:
            a = insert_cost(policy, small, inserts, directory)
            b = insert_cost(policy, large, inserts, directory)
            print(f"{policy:>8} {a:>12.1f} {b:>12.1f}   {b / a:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
