"""The cache core over real LMDB: persistence, corruption, storage failures."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lmdb
import pytest
import webtest

from fic_middleware import record

from .conftest import Origin
from .images import png

PATH = "/_fic/o/t/img/core.png"


def test_entries_persist_across_middleware_instances(make_mw: Any, origin: Origin) -> None:
    first = make_mw()
    webtest.TestApp(first).get(PATH)
    first.close()
    second = make_mw()
    response = webtest.TestApp(second).get(PATH)
    assert response.headers["Cache-Status"] == "fic; hit"
    assert origin.hits["/img/core.png"] == 1


def test_two_live_instances_share_one_directory(make_mw: Any, origin: Origin) -> None:
    a, b = webtest.TestApp(make_mw()), webtest.TestApp(make_mw())
    a.get(PATH)
    assert b.get(PATH).headers["Cache-Status"] == "fic; hit"


def corrupt_stored_record(cache_dir: Path, flip_at: int) -> None:
    """Flip one byte of the only record, behind the middleware's back."""
    env = lmdb.open(str(cache_dir), max_dbs=4, map_size=64 << 20)
    try:
        records = env.open_db(b"records")
        with env.begin(write=True, db=records) as txn:
            ((key, value),) = list(txn.cursor())
            damaged = bytearray(value)
            damaged[flip_at] ^= 0xFF
            txn.put(key, bytes(damaged))
    finally:
        env.close()


@pytest.mark.parametrize("flip_at", [-1, 10, 50], ids=["body", "header", "meta"])
def test_corrupt_record_is_never_served_but_refetched(make_mw: Any, origin: Origin,
                                                      tmp_path: Path, flip_at: int) -> None:
    mw = make_mw()
    webtest.TestApp(mw).get(PATH)
    mw.close()
    corrupt_stored_record(tmp_path / "cache", flip_at)
    mw = make_mw()
    response = webtest.TestApp(mw).get(PATH)
    assert response.body == png("core.png")
    assert response.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert mw.cache.stats.corrupt == 1
    assert origin.hits["/img/core.png"] == 2
    assert webtest.TestApp(mw).get(PATH).headers["Cache-Status"] == "fic; hit"


def test_unknown_record_version_is_a_miss(make_mw: Any, origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    mw = make_mw()
    monkeypatch.setattr(record, "VERSION", record.VERSION + 1)
    webtest.TestApp(mw).get(PATH)  # written by a "newer" release
    monkeypatch.undo()
    assert webtest.TestApp(mw).get(PATH).headers["Cache-Status"] == "fic; fwd=miss; stored"


def test_storage_read_failure_falls_back_to_the_origin(make_mw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mw = make_mw()

    def broken(*args: Any) -> None:
        raise lmdb.Error("disk on fire")

    monkeypatch.setattr(mw.storage, "get", broken)
    response = webtest.TestApp(mw).get(PATH)
    assert response.body == png("core.png")


def test_storage_write_failure_still_serves_the_image(make_mw: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    mw = make_mw()

    def broken(*args: Any) -> None:
        raise lmdb.DiskError("no space")

    monkeypatch.setattr(mw.storage, "put", broken)
    response = webtest.TestApp(mw).get(PATH)
    assert response.body == png("core.png")
    assert response.headers["Cache-Status"] == "fic; fwd=miss"


def test_memory_backend(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(backend="memory"))
    client.get(PATH)
    assert client.get(PATH).headers["Cache-Status"] == "fic; hit"


def test_image_larger_than_the_cache_budget_is_served_unstored(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(max_bytes="64KiB", max_image_bytes="64KiB"))
    response = client.get("/_fic/o/t/big/70000", status=502)  # over max_image_bytes
    assert "larger" in response.text
    client = webtest.TestApp(make_mw(backend="memory", max_bytes=40_000, max_image_bytes=40_000))
    response = client.get("/_fic/o/t/big/39900")
    assert response.headers["Cache-Status"] == "fic; fwd=miss"  # record = body + header
