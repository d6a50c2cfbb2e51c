"""The Redis tier failing under load: killed, or hung (SIGSTOP), while several threads keep
asking for hits and misses. Every request succeeds with the origin's exact bytes."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Origin
from ..images import png
from ..servers import RedisServer
from .conftest import Answer, assert_sane, call

pytestmark = pytest.mark.slow  # the reliability suite: scripts/test --fast skips it

THREADS = 8


def _load(mw: Any, fault: Callable[[], None], seconds: float = 2.5,
          fault_at: float = 0.8) -> list[tuple[str, Answer, float]]:
    """THREADS threads ask for a hot set (hits) and new names (misses) for ``seconds``;
    ``fault()`` runs at ``fault_at``. Returns (name, answer, latency) of every request."""
    results: list[tuple[str, Answer, float]] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(n: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            name = f"hot{i % 5}.png" if i % 3 else f"new-{n}-{i}.png"
            started = time.monotonic()
            answer = call(mw, f"/_fic/o/t/img/{name}")
            with lock:
                results.append((name, answer, time.monotonic() - started))

    with ThreadPoolExecutor(THREADS) as pool:
        futures = [pool.submit(client, n) for n in range(THREADS)]
        time.sleep(fault_at)
        fault()
        time.sleep(seconds - fault_at)
        stop.set()
        for future in futures:
            future.result()
    return results


def _all_succeeded(results: list[tuple[str, Answer, float]]) -> None:
    assert len(results) > 50
    for name, answer, _ in results:
        assert answer.status == 200, (name, answer)
        assert_sane(answer, png(name))


@pytest.fixture
def mw(make_mw: Any, tmp_path: Path, redis_server: RedisServer) -> Any:
    return make_mw(redis_url=redis_server.url, redis_key="test-redis-key")


def test_redis_killed_mid_run(mw: Any, origin: Origin, redis_server: RedisServer) -> None:
    results = _load(mw, redis_server.stop)
    _all_succeeded(results)
    assert mw.cache.stats.redis_failures >= 1
    # After the fault the hot set still hits L1, and new names are fetched and stored.
    answer = call(mw, "/_fic/o/t/img/hot1.png")
    assert_sane(answer, png("hot1.png"))
    assert answer.headers["Cache-Status"] == "fic; hit"
    answer = call(mw, "/_fic/o/t/img/after-kill.png")
    assert answer.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert_sane(answer, png("after-kill.png"))
    assert origin.hits["/img/hot1.png"] == 1  # one fetch per key, Redis or not


def test_redis_hung_mid_run(mw: Any, redis_server: RedisServer) -> None:
    """A Redis that stops answering (but keeps its connections open) costs each request at
    most its short timeout, then the tier is skipped."""
    process = redis_server.process
    assert process is not None
    try:
        results = _load(mw, lambda: process.send_signal(signal.SIGSTOP))
    finally:
        process.send_signal(signal.SIGCONT)
    _all_succeeded(results)
    assert max(latency for *_, latency in results) < 2.0
    assert mw.cache.stats.redis_failures >= 1
    assert process is redis_server.process  # hung, never restarted


def test_redis_back_after_a_restart(make_mw: Any, tmp_path: Path, redis_server: RedisServer,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Killed then restarted: requests succeed throughout, and the tier is used again once
    its back-off has passed (hosts share again)."""
    from fic_middleware import redis_tier
    monkeypatch.setattr(redis_tier, "_BACKOFF", 0.2)
    a = make_mw(cache_dir=str(tmp_path / "a"), redis_url=redis_server.url, redis_key="test-redis-key")
    results = _load(a, redis_server.stop, seconds=1.5, fault_at=0.5)
    redis_server.start()
    _all_succeeded(results)
    time.sleep(0.3)
    assert call(a, "/_fic/o/t/img/shared-again.png").status == 200
    b = make_mw(cache_dir=str(tmp_path / "b"), redis_url=redis_server.url, redis_key="test-redis-key")
    answer = call(b, "/_fic/o/t/img/shared-again.png")
    assert_sane(answer, png("shared-again.png"))
    assert answer.headers["Cache-Status"] == "fic; hit; detail=shared"
