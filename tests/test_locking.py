"""One fetch per key: threads share it, processes take turns, a dead holder frees the key."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import webtest

from fic_middleware.locking import HostLocks, SingleFlight

from .conftest import Origin
from .images import png

KEY = b"k" * 16


def test_single_flight_has_one_leader() -> None:
    flights = SingleFlight()
    first, leads = flights.join(KEY)
    second, follows = flights.join(KEY)
    assert leads and not follows and first is second
    flights.land(KEY, first, ValueError("x"))
    assert second.done.is_set() and isinstance(second.error, ValueError)
    third, leads_again = flights.join(KEY)
    assert leads_again and third is not first


def test_threads_stampede_makes_one_fetch(make_mw: Any, origin: Origin) -> None:
    mw = make_mw()
    path = "/_fic/o/t/slow/0.5/herd.png"

    def get(_: int) -> Any:
        return webtest.TestApp(mw).get(path)

    with ThreadPoolExecutor(16) as pool:
        responses = list(pool.map(get, range(16)))
    assert origin.hits["/slow/0.5/herd.png"] == 1
    assert {r.body for r in responses} == {png("0.5/herd.png")}
    statuses = sorted(r.headers["Cache-Status"] for r in responses)
    assert statuses.count("fic; fwd=miss; stored") == 1
    assert set(statuses) <= {"fic; fwd=miss; stored", "fic; fwd=miss; collapsed", "fic; hit"}


def fork_holding(locks: HostLocks, key: bytes, seconds: float) -> int:
    """A child process that holds ``key`` for ``seconds`` (or until killed)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            locks.acquire(key, 5, lambda: False)
            os.write(write, b"1")
            time.sleep(seconds)
        finally:
            os._exit(0)
    os.read(read, 1)
    os.close(read)
    os.close(write)
    return pid


def test_host_lock_waits_for_another_process(tmp_path: Path) -> None:
    locks = HostLocks(str(tmp_path / "fic.lock"))
    pid = fork_holding(locks, KEY, 0.5)
    started = time.monotonic()
    assert locks.acquire(KEY, 5, lambda: False)
    assert time.monotonic() - started >= 0.3
    locks.release(KEY)
    os.waitpid(pid, 0)


def test_host_lock_of_a_killed_holder_is_free(tmp_path: Path) -> None:
    locks = HostLocks(str(tmp_path / "fic.lock"))
    pid = fork_holding(locks, KEY, 60)
    assert not locks.acquire(KEY, 0.2, lambda: False)  # held
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert locks.acquire(KEY, 2, lambda: False)
    locks.release(KEY)


def test_host_lock_wait_ends_when_the_work_is_done(tmp_path: Path) -> None:
    locks = HostLocks(str(tmp_path / "fic.lock"))
    pid = fork_holding(locks, KEY, 60)
    done = threading.Event()
    threading.Timer(0.2, done.set).start()
    started = time.monotonic()
    assert locks.acquire(KEY, 10, done.is_set) is False
    assert time.monotonic() - started < 2
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_other_keys_are_not_blocked(tmp_path: Path) -> None:
    locks = HostLocks(str(tmp_path / "fic.lock"))
    pid = fork_holding(locks, KEY, 60)
    assert locks.acquire(b"other-key-123456", 0.5, lambda: False)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)


def test_waiter_fetches_itself_after_lock_timeout(make_mw: Any, origin: Origin,
                                                  tmp_path: Path) -> None:
    mw = make_mw(lock_timeout="0.3s")
    pid = fork_holding(mw.cache.locks, mw.router.route("/o/t/img/stuck.png").key, 60)
    try:
        response = webtest.TestApp(mw).get("/_fic/o/t/img/stuck.png")
        assert response.body == png("stuck.png")
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
