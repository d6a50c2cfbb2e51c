"""The limits deployed: the gunicorn workers of a host, and hosts sharing a Redis, hold one
miss budget and one in-flight cap between them, not one each."""

from __future__ import annotations

import itertools
import os
import signal
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from .conftest import Origin
from .servers import RedisServer, get, gunicorn

pytestmark = pytest.mark.slow

APP = "tests.apps.gunicorn_app:app"
RATE, BURST, SECONDS = 10, 5, 5.0


def settings(origin: Origin, cache_dir: Path, **extra: str) -> dict[str, str]:
    return {"FIC_CACHE_DIR": str(cache_dir), "FIC_ORIGINS": f"t={origin.base}",
            "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_MAX_BYTES": "64MiB", **extra}


def misses_for(bases: list[str], seconds: float) -> tuple[list[tuple[int, str]], float]:
    """Distinct images (all misses) from one client on 8 connections for ``seconds``,
    round robin over ``bases``: (status, worker pid) of each answer, and the time taken."""
    numbers = itertools.count()
    started = time.monotonic()
    deadline = started + seconds

    def client() -> list[tuple[int, str]]:
        answers = []
        while time.monotonic() < deadline:
            n = next(numbers)
            status, headers, _ = get(f"{bases[n % len(bases)]}/_fic/o/t/img/m{n}.png")
            answers.append((status, f"{n % len(bases)}:{headers.get('X-Worker-Pid')}"))
        return answers

    with ThreadPoolExecutor(8) as pool:
        answers = [a for done in [pool.submit(client) for _ in range(8)] for a in done.result()]
    return answers, time.monotonic() - started


def assert_one_budget(origin: Origin, answers: list[tuple[int, str]], seconds: float) -> None:
    """The origin saw what one bucket allows over ``seconds`` (±10 %), the rest got 429."""
    fetched = sum(count for path, count in origin.hits.items() if path.startswith("/img/m"))
    expected = RATE * seconds + BURST
    assert {status for status, _ in answers} == {200, 429}
    assert sum(status == 200 for status, _ in answers) == fetched
    assert abs(fetched - expected) <= 0.1 * expected, (fetched, expected)


def test_four_workers_share_one_miss_budget(origin: Origin, tmp_path: Path) -> None:
    env = settings(origin, tmp_path / "cache", FIC_MISS_RATE=str(RATE), FIC_MISS_BURST=str(BURST))
    with gunicorn(APP, env, ["--workers", "4"]) as base:
        answers, seconds = misses_for([base], SECONDS)
    assert len({worker for status, worker in answers if status == 200}) >= 2, "one worker only"
    assert_one_budget(origin, answers, seconds)


def test_two_hosts_sharing_redis_share_one_miss_budget(
        origin: Origin, tmp_path: Path, redis_server: RedisServer) -> None:
    with ExitStack() as hosts:
        bases = [hosts.enter_context(gunicorn(APP, settings(
            origin, tmp_path / name, FIC_MISS_RATE=str(RATE), FIC_MISS_BURST=str(BURST),
            FIC_REDIS_URL=redis_server.url, FIC_REDIS_KEY="test-redis-key"), ["--workers", "2"]))
            for name in ("a", "b")]
        answers, seconds = misses_for(bases, SECONDS)
    assert {worker[0] for status, worker in answers if status == 200} == {"0", "1"}
    assert_one_budget(origin, answers, seconds)


@pytest.fixture
def capped(origin: Origin, tmp_path: Path) -> Iterator[str]:
    """Four sync workers with two origin fetches in flight at most, for the whole host."""
    env = settings(origin, tmp_path / "cache", FIC_MAX_INFLIGHT_FETCHES="2")
    with gunicorn(APP, env, ["--workers", "4"]) as base:
        yield base


def test_four_workers_share_one_inflight_cap(capped: str, origin: Origin) -> None:
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda n: get(f"{capped}/_fic/o/t/slow/3/c{n}.png"), range(8)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [200] * 2 + [503] * 6
    assert all(headers["Retry-After"] == "1" for status, headers, _ in answers if status == 503)
    assert sum(count for path, count in origin.hits.items() if path.startswith("/slow/")) == 2


def holders(path: Path) -> set[int]:
    """The processes holding an fcntl lock on ``path``, as the kernel lists them."""
    device = os.stat(path)
    inode = f"{os.major(device.st_dev):02x}:{os.minor(device.st_dev):02x}:{device.st_ino}"
    with open("/proc/locks") as locks:
        return {int(fields[4]) for fields in (line.split() for line in locks)
                if fields[1] == "POSIX" and fields[5] == inode}


def test_a_killed_worker_gives_its_inflight_slot_back(origin: Origin, tmp_path: Path) -> None:
    env = settings(origin, tmp_path / "cache", FIC_MAX_INFLIGHT_FETCHES="1")
    with gunicorn(APP, env, ["--workers", "4"]) as base:
        # The worker is killed under this request: its client sees the connection drop.
        slow = threading.Thread(target=lambda: _ignore_errors(f"{base}/_fic/o/t/slow/10/k.png"))
        slow.start()
        deadline = time.monotonic() + 10
        while not origin.hits["/slow/10/k.png"] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert get(f"{base}/_fic/o/t/img/k1.png")[0] == 503  # another worker: the cap is full
        (holder,) = holders(tmp_path / "cache" / "inflight")
        os.kill(holder, signal.SIGKILL)
        while os.path.exists(f"/proc/{holder}"):  # until gunicorn has reaped it
            time.sleep(0.01)
        assert get(f"{base}/_fic/o/t/img/k2.png")[0] == 200
        slow.join()


def _ignore_errors(url: str) -> None:
    try:
        get(url)
    except OSError:
        pass
