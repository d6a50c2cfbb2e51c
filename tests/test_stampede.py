"""Stampedes against real gunicorn workers: one origin fetch for a crowd, and a killed
leader replaced by a waiter."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import Origin
from .images import png
from .servers import get, gunicorn

pytestmark = pytest.mark.slow


def env_for(origin: Origin, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"t={origin.base}",
            "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_MAX_BYTES": "64MiB", **extra}


def test_64_cold_requests_over_4_workers_make_one_fetch(origin: Origin, tmp_path: Path) -> None:
    # --worker-connections 4: a worker takes no more than its threads, so the crowd spreads.
    args = ["--workers", "4", "--worker-class", "gthread", "--threads", "4",
            "--worker-connections", "4"]
    with gunicorn("tests.apps.gunicorn_app:app", env_for(origin, tmp_path), args) as base:
        url = f"{base}/_fic/o/t/slow/1/crowd.png"
        with ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda _: get(url, timeout=30), range(64)))
    assert [status for status, _, _ in answers] == [200] * 64
    assert {body for _, _, body in answers} == {png("1/crowd.png")}
    assert len({headers["X-Worker-Pid"] for _, headers, _ in answers}) > 1
    assert origin.hits["/slow/1/crowd.png"] == 1


def lock_holders(lock_file: Path) -> set[int]:
    """Pids holding an fcntl lock on ``lock_file`` (from /proc/locks)."""
    inode = os.stat(lock_file).st_ino
    holders = set()
    with open("/proc/locks") as locks:
        for line in locks:
            fields = line.split()
            if "->" in fields:  # a waiter, not a holder
                continue
            pid, device_inode = fields[4], fields[5]
            if device_inode.rsplit(":", 1)[1] == str(inode):
                holders.add(int(pid))
    return holders


def test_killed_leader_is_replaced_by_a_waiter(origin: Origin, tmp_path: Path) -> None:
    env = env_for(origin, tmp_path, FIC_LOCK_TIMEOUT="30s")
    with gunicorn("tests.apps.gunicorn_app:app", env, ["--workers", "2", "--timeout", "60"]) as base:
        url = f"{base}/_fic/o/t/slow/3/leader.png"
        results: dict[str, object] = {}

        def fetch(name: str) -> None:
            try:
                results[name] = get(url, timeout=30)
            except OSError as exc:  # the leader's client loses its connection
                results[name] = exc

        leader = threading.Thread(target=fetch, args=("leader",))
        leader.start()
        deadline = time.monotonic() + 10
        while not origin.hits["/slow/3/leader.png"] and time.monotonic() < deadline:
            time.sleep(0.02)
        # The other (sync) worker takes the second request and waits on the lock.
        waiter = threading.Thread(target=fetch, args=("waiter",))
        waiter.start()
        time.sleep(0.5)
        holders = lock_holders(tmp_path / "cache" / "fic.lock")
        assert len(holders) == 1, holders
        os.kill(holders.pop(), signal.SIGKILL)
        waiter.join(30)
        leader.join(30)
    status, headers, body = results["waiter"]  # type: ignore[misc]
    assert (status, body) == (200, png("3/leader.png"))
    assert headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert origin.hits["/slow/3/leader.png"] == 2  # the dead leader's fetch, and the waiter's
