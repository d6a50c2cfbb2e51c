"""One fork mechanism (fic_middleware.forks): what a parent opened is not used by its child."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fic_middleware import forks
from fic_middleware.config import Config
from fic_middleware.fetch import Fetcher
from fic_middleware.locking import HostLocks
from fic_middleware.storage.lmdb_store import LMDBStore


def in_child(work: Callable[[], Any]) -> Any:
    """Run ``work`` in a forked child; its JSON result, or the child's error as a string."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            try:
                result: Any = work()
            except Exception as exc:
                result = f"error: {exc!r}"
            os.write(write, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    data = os.read(read, 65536)
    os.close(read)
    return json.loads(data)


class Probe:
    forked = False

    def after_fork(self) -> None:
        self.forked = True


def test_a_registered_object_is_told_in_the_child_only() -> None:
    probe = Probe()
    forks.register(probe)
    assert in_child(lambda: probe.forked) is True
    assert probe.forked is False


def test_the_child_makes_its_own_connection_pool() -> None:
    fetcher = Fetcher(Config.load(environ={}, backend="memory"))
    parent_pool = fetcher._manager()
    assert in_child(lambda: fetcher._manager() is not parent_pool) is True
    assert fetcher._manager() is parent_pool


def test_the_child_opens_its_own_lmdb_environment(tmp_path: Path) -> None:
    store = LMDBStore(str(tmp_path / "db"), max_bytes=1 << 20)
    store.put(b"k" * 16, b"parent")

    def child() -> Any:
        store.put(b"c" * 16, b"child")
        return store.get(b"k" * 16, lambda key, value: bytes(value).decode())

    assert in_child(child) == "parent"
    assert store.get(b"c" * 16, lambda key, value: bytes(value)) == b"child"
    store.close()


def test_the_child_takes_host_locks_with_its_own_descriptor(tmp_path: Path) -> None:
    locks = HostLocks(str(tmp_path / "fic.lock"))
    assert locks.acquire(b"a" * 16, 1, lambda: False)
    # The parent holds the lock: the child, a process of its own, must not get it.
    assert in_child(lambda: locks.acquire(b"a" * 16, 0.2, lambda: False)) is False
    assert in_child(lambda: locks.acquire(b"b" * 16, 0.2, lambda: False)) is True
    locks.release(b"a" * 16)
    locks.close()


def test_a_fork_without_the_hooks_is_caught_by_check(monkeypatch: Any) -> None:
    """uWSGI forks from C without py-call-osafterfork: Python's at-fork hooks do not run."""
    probe = Probe()
    forks.register(probe)
    monkeypatch.setattr(forks, "_pid", os.getpid() + 1)  # as if this process were a fork
    forks.check()
    assert probe.forked and forks._pid == os.getpid()
    probe.forked = False
    forks.check()
    assert probe.forked is False
