"""Hits answered from a worker's memo (fic_middleware.generations): whatever another process
does to an entry is seen at the next request, and damage on disk within a second.

The cache's clock stands still in these tests, so without the generation stamps every
request after the first would be answered from the memo of the same second.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import webtest

from .conftest import Clock, Origin
from .images import png

PATH = "/_fic/o/t/img/gen.png"
NOW = 1_900_000_000.25
# What another worker of the host runs: a middleware over the same directory, then `action`.
OTHER_WORKER = """
import sys
from fic_middleware import FastImageCache
from fic_middleware.record import Entry, encode, strong_etag
mw = FastImageCache(lambda environ, start_response: [], cache_dir=sys.argv[1],
                    origins={"t": sys.argv[2]}, allowed_networks=["127.0.0.1/32"],
                    max_bytes=sys.argv[3], max_image_bytes=sys.argv[3])
key = mw.router.route(sys.argv[4][len("/_fic"):]).key
exec(sys.argv[5])
mw.close()
"""
REPLACED = b"\\x89PNG\\r\\n\\x1a\\n" + b"replaced" * 8
ACTIONS = {
    "purge": "mw.purge_path(sys.argv[4])",
    "purge_all": "mw.purge_all()",
    "replace": f"""
body = {REPLACED.decode()!r}.encode("latin-1")
entry = Entry(body, "image/png", strong_etag(body), None, None, {NOW}, {NOW} + 3600)
assert mw.storage.put(key, encode(entry, key))
""",
    # Fill the cache with other entries until this one is evicted.
    "evict": f"""
for i in range(64):
    body = b"\\x89PNG\\r\\n\\x1a\\n" + bytes([i]) * 20000
    other = bytes([i]) * 16
    mw.storage.put(other, encode(Entry(body, "image/png", strong_etag(body), None, None,
                                       {NOW}, {NOW} + 3600), other))
assert mw.storage.get(key, lambda k, v: v) is None
""",
}
MAX_BYTES = "512KiB"
# Another process flips the last byte of the only record with lmdb itself: no stamp.
DAMAGE = """
import sys, lmdb
env = lmdb.open(sys.argv[1], max_dbs=8)
with env.begin(write=True, db=env.open_db(b"records")) as txn:
    ((key, value),) = list(txn.cursor())
    txn.put(key, value[:-1] + bytes([value[-1] ^ 0xFF]))
"""


def other_worker(tmp_path: Path, origin: Origin, action: str) -> None:
    subprocess.run([sys.executable, "-c", OTHER_WORKER, str(tmp_path / "cache"), origin.base,
                    MAX_BYTES, PATH, action], check=True, timeout=60,
                   env={**os.environ, "PYTHONPATH": os.getcwd()})


def served_from_memo(make_mw: Any, **options: Any) -> tuple[Any, webtest.TestApp, Clock]:
    clock = Clock(NOW)
    mw = make_mw(clock=clock, max_bytes=MAX_BYTES, max_image_bytes=MAX_BYTES, **options)
    client = webtest.TestApp(mw)
    client.get(PATH)  # a miss, stored
    assert client.get(PATH).headers["Cache-Status"] == "fic; hit"  # read, and kept in the memo
    return mw, client, clock


def test_a_hit_within_the_second_does_not_read_the_store(make_mw: Any) -> None:
    mw, client, _ = served_from_memo(make_mw)
    reads = []
    get = mw.cache._get
    mw.cache._get = lambda key, decode: reads.append(key) or get(key, decode)
    response = client.get(PATH)
    assert response.headers["Cache-Status"] == "fic; hit"
    assert response.body == png("gen.png")
    assert reads == []


@pytest.mark.parametrize("action", ["purge", "purge_all", "evict"])
def test_an_entry_removed_by_another_process_is_a_miss_at_once(
        make_mw: Any, origin: Origin, tmp_path: Path, action: str) -> None:
    _, client, _ = served_from_memo(make_mw)
    other_worker(tmp_path, origin, ACTIONS[action])
    assert client.get(PATH).headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert origin.hits["/img/gen.png"] == 2


def test_an_entry_replaced_by_another_process_is_served_at_once(
        make_mw: Any, origin: Origin, tmp_path: Path) -> None:
    _, client, _ = served_from_memo(make_mw)
    other_worker(tmp_path, origin, ACTIONS["replace"])
    response = client.get(PATH)
    assert response.body == REPLACED
    assert response.headers["Cache-Status"] == "fic; hit"


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
def test_a_purge_in_this_process_is_a_miss_at_once(make_mw: Any, origin: Origin,
                                                  backend: str) -> None:
    mw, client, _ = served_from_memo(make_mw, backend=backend)
    assert mw.purge_path(PATH) == 1
    assert client.get(PATH).headers["Cache-Status"] == "fic; fwd=miss; stored"


def test_an_entry_expiring_within_the_second_is_not_served_from_the_memo(
        make_mw: Any, origin: Origin) -> None:
    mw, client, clock = served_from_memo(make_mw)
    (expires_at,) = {hot[1].expires_at for hot in mw.parts.tiers.reader.hot.values()}
    assert expires_at % 1 > 0.2  # so a moment before and one after share a second
    clock.now = expires_at - 0.1
    assert client.get(PATH).headers["Cache-Status"] == "fic; hit"
    clock.now = expires_at + 0.05
    assert client.get(PATH).headers["Cache-Status"] != "fic; hit"


def test_damage_on_disk_is_seen_within_a_second(make_mw: Any, origin: Origin,
                                                tmp_path: Path) -> None:
    mw, client, clock = served_from_memo(make_mw)
    subprocess.run([sys.executable, "-c", DAMAGE, str(tmp_path / "cache")], check=True,
                   timeout=60)
    clock.now += 1
    response = client.get(PATH)
    assert response.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert response.body == png("gen.png")
    assert mw.cache.stats.corrupt == 1


def test_a_forked_worker_sees_a_purge_made_after_the_fork(make_mw: Any, origin: Origin) -> None:
    mw, client, _ = served_from_memo(make_mw)  # the memo and the stamps are inherited
    go_read, go_write = os.pipe()
    answer_read, answer_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.read(go_read, 1)
            status = client.get(PATH).headers["Cache-Status"]
            os.write(answer_write, status.encode())
        finally:
            os._exit(0)
    for fd in (go_read, answer_write):
        os.close(fd)
    mw.purge_path(PATH)
    os.write(go_write, b"x")
    os.waitpid(pid, 0)
    answer = os.read(answer_read, 200).decode()
    for fd in (go_write, answer_read):
        os.close(fd)
    assert answer == "fic; fwd=miss; stored"
