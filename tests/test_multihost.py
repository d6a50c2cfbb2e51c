"""Two hosts (two cache directories, two gunicorn servers of two workers each), one
redis-server, one origin: a purge on one host reaches the other."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
import redis

from .conftest import Origin
from .servers import RedisServer, get, gunicorn

pytestmark = pytest.mark.slow
TOKEN = "multihost-admin-token-0123456789"
APP = "tests.apps.gunicorn_app:app"

Host = Callable[[str], AbstractContextManager[str]]


@pytest.fixture
def host(origin: Origin, tmp_path: Path, redis_server: RedisServer) -> Host:
    """Runs the host ``name`` (its cache directory kept across restarts)."""
    def run(name: str) -> AbstractContextManager[str]:
        env = {"FIC_CACHE_DIR": str(tmp_path / name), "FIC_ORIGINS": f"t={origin.base}",
               "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_REDIS_URL": redis_server.url,
               "FIC_REDIS_KEY": "multihost-redis-key", "FIC_ADMIN_TOKEN": TOKEN}
        return gunicorn(APP, env, ["--workers", "2"])
    return run


def cache_status(base: str, name: str) -> str:
    status, headers, _ = get(f"{base}/_fic/o/t/img/{name}")
    assert status == 200
    return headers["Cache-Status"]


def warm(base: str, name: str) -> None:
    """Ask until both workers have answered from the cache (one stores, both read)."""
    for _ in range(20):
        cache_status(base, name)
    assert cache_status(base, name) == "fic; hit"


def purge(base: str, origin: Origin, name: str) -> None:
    body = json.dumps({"url": f"{origin.base}/img/{name}"}).encode()
    request = urllib.request.Request(f"{base}/_fic/_admin/purge", body, method="POST",
                                     headers={"Authorization": f"Bearer {TOKEN}",
                                              "Content-Type": "application/json"})
    with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request) as answer:
        assert json.load(answer) == {"purged": 1}


def test_a_purge_reaches_the_other_host_within_2s(host: Host, origin: Origin) -> None:
    with host("a") as a, host("b") as b:
        warm(a, "p.png")
        warm(b, "p.png")
        purge(a, origin, "p.png")
        deadline = time.monotonic() + 2
        answers = []
        while time.monotonic() < deadline:  # a hit until the purge is applied, then a miss
            answers.append(cache_status(b, "p.png"))
            if answers[-1].startswith("fic; fwd=miss"):
                break
            time.sleep(0.02)
        assert answers[-1] == "fic; fwd=miss; stored", answers


def test_a_host_stopped_during_a_purge_never_serves_it(host: Host, origin: Origin) -> None:
    with host("a") as a:
        warm(a, "gone.png")
        warm(a, "kept.png")
        with host("b") as b:
            warm(b, "gone.png")
            warm(b, "kept.png")
        purge(a, origin, "gone.png")
        with host("b") as b:
            assert cache_status(b, "gone.png") == "fic; fwd=miss; stored"
            assert cache_status(b, "kept.png") == "fic; hit"  # caught up, not emptied


def test_a_host_behind_a_trimmed_log_drops_its_l1(host: Host, origin: Origin,
                                                  redis_server: RedisServer) -> None:
    with host("a") as a:
        warm(a, "gone.png")
        warm(a, "kept.png")
        with host("b") as b:
            warm(b, "gone.png")
            warm(b, "kept.png")
        purge(a, origin, "gone.png")
        client = redis.Redis.from_url(redis_server.url)
        client.xtrim("fic:purges", maxlen=0, approximate=False)
        client.close()
        with host("b") as b:
            assert cache_status(b, "gone.png") == "fic; fwd=miss; stored"
            # Out of its L1, from Redis again.
            assert cache_status(b, "kept.png") == "fic; hit; detail=shared"

