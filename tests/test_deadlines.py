"""The fetch deadline's watchdog (fic_middleware.netguard): one thread per process, not one
per fetch, and a forked worker gets its own. That it cuts a dripping head is in
tests/reliability/test_origin_faults.py."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from fic_middleware import netguard
from fic_middleware.config import Config
from fic_middleware.fetch import Fetcher

from .conftest import Origin
from .test_forks import in_child


def test_fetches_start_no_thread_each(origin: Origin, monkeypatch: pytest.MonkeyPatch) -> None:
    fetcher = Fetcher(Config.load(environ={}, backend="memory", origins={"t": origin.base},
                                  allowed_networks=["127.0.0.1/32"]))
    fetcher.fetch(f"{origin.base}/img/first.png")  # may start the process's watchdog
    started: list[str] = []
    start = threading.Thread.start
    fetching = threading.current_thread()  # the origin's server starts threads of its own

    def counted(thread: threading.Thread) -> None:
        if threading.current_thread() is fetching:
            started.append(thread.name)
        start(thread)

    monkeypatch.setattr(threading.Thread, "start", counted)
    for name in ("a", "b", "c"):
        assert fetcher.fetch(f"{origin.base}/img/{name}.png").status == 200
    fetcher.close()
    assert started == []


def test_a_forked_worker_has_its_own_watchdog() -> None:
    cut = threading.Event()
    netguard._watchdog.unwatch(netguard._watchdog.watch(time.monotonic() + 60, cut.set))

    def in_the_child() -> Any:
        child_cut = threading.Event()
        netguard._watchdog.watch(time.monotonic() + 0.05, child_cut.set)
        return child_cut.wait(5)

    assert in_child(in_the_child) is True
    assert not cut.is_set()


def test_the_watchdog_outlives_an_after_fork_in_its_own_process() -> None:
    """forks.check() runs after_fork() in a process forked without Python's hooks (uWSGI
    without py-call-osafterfork): a watchdog thread that was already running keeps its own
    table and lock, and the new one starts on the next fetch."""
    before = threading.Event()
    netguard._watchdog.watch(time.monotonic() + 0.1, before.set)
    netguard._watchdog.after_fork()
    after = threading.Event()
    netguard._watchdog.watch(time.monotonic() + 0.05, after.set)
    assert before.wait(5) and after.wait(5)
    time.sleep(0.1)  # the old thread goes back to waiting, on its own lock
