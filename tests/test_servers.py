"""The middleware under granian (WSGI) and uWSGI, each started from its example
(examples/granian.sh, examples/uwsgi.ini) with several workers sharing one cache directory:
fork safety, the stampede lock across processes, and admin metrics summed over the workers.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path

import pytest
from werkzeug.datastructures import Headers

from .conftest import Origin
from .images import png
from .servers import get, granian, uwsgi

pytestmark = pytest.mark.slow

APP = "tests.apps.gunicorn_app:app"  # tags every response with X-Worker-Pid
TOKEN = "servers-admin-token-0123456789"
Serve = Callable[[dict[str, str], int], AbstractContextManager[str]]


def serve_granian(env: dict[str, str], workers: int) -> AbstractContextManager[str]:
    return granian(APP, env, workers)


def serve_uwsgi(env: dict[str, str], workers: int) -> AbstractContextManager[str]:
    return uwsgi(env, APP, workers)


@pytest.fixture(params=[pytest.param(serve_granian, id="granian"),
                        pytest.param(serve_uwsgi, id="uwsgi")])
def serve(request: pytest.FixtureRequest) -> Iterator[Serve]:
    yield request.param


def fetch(url: str, headers: dict[str, str] | None = None,
          timeout: float = 10) -> tuple[int, Headers, bytes]:
    """get() with case-insensitive headers: granian sends header names in lower case."""
    status, raw, body = get(url, headers, timeout=timeout)
    return status, Headers(raw), body


def env_for(origin: Origin, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"t={origin.base}",
            "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_MAX_BYTES": "64MiB", **extra}


def hits_until_every_worker(url: str, workers: int) -> dict[str, int]:
    """Bursts of concurrent hits, so that a busy worker leaves requests to the others, until
    ``workers`` workers have answered (or 2,000 requests); hits counted per worker pid."""
    by_worker: dict[str, int] = {}
    with ThreadPoolExecutor(16) as pool:
        for _ in range(10):
            for status, headers, body in pool.map(lambda _: fetch(url), range(200)):
                assert (status, headers["Cache-Status"], body) == (200, "fic; hit", png("g.png"))
                pid = headers["X-Worker-Pid"]
                by_worker[pid] = by_worker.get(pid, 0) + 1
            if len(by_worker) == workers:
                break
    return by_worker


def test_workers_serve_hits_from_one_shared_cache(serve: Serve, origin: Origin,
                                                   tmp_path: Path) -> None:
    with serve(env_for(origin, tmp_path), 2) as base:
        status, headers, body = fetch(f"{base}/_fic/o/t/img/g.png")
        assert (status, headers["Cache-Status"], body) == (200, "fic; fwd=miss; stored",
                                                           png("g.png"))
        workers = hits_until_every_worker(f"{base}/_fic/o/t/img/g.png", 2)
        assert get(f"{base}/page")[2].isdigit()  # pass-through still reaches the app
    assert len(workers) == 2, "both workers should have served hits"
    assert origin.hits["/img/g.png"] == 1


def test_cold_crowd_over_4_workers_makes_one_fetch(serve: Serve, origin: Origin,
                                                   tmp_path: Path) -> None:
    with serve(env_for(origin, tmp_path), 4) as base:
        url = f"{base}/_fic/o/t/slow/1/crowd.png"
        with ThreadPoolExecutor(64) as pool:
            answers = list(pool.map(lambda _: fetch(url, timeout=30), range(64)))
    assert [status for status, _, _ in answers] == [200] * 64
    assert {body for _, _, body in answers} == {png("1/crowd.png")}
    assert len({headers["X-Worker-Pid"] for _, headers, _ in answers}) > 1
    assert origin.hits["/slow/1/crowd.png"] == 1


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


def check_metrics_sum_every_worker(base: str) -> None:
    fetch(f"{base}/_fic/o/t/img/g.png")
    hits = hits_until_every_worker(f"{base}/_fic/o/t/img/g.png", 2)
    assert len(hits) == 2
    time.sleep(1.5)  # each worker writes its counters once a second
    status, headers, body = fetch(f"{base}/_fic/_admin/metrics",
                                  {"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and headers["Content-Type"].startswith("text/plain")
    text = body.decode()
    assert metric(text, 'fic_requests_total{result="hit"}') == sum(hits.values())
    assert metric(text, 'fic_requests_total{result="miss"}') == 1
    assert metric(text, "fic_processes") == 2


def test_metrics_sum_every_worker(serve: Serve, origin: Origin, tmp_path: Path) -> None:
    with serve(env_for(origin, tmp_path, FIC_ADMIN_TOKEN=TOKEN), 2) as base:
        check_metrics_sum_every_worker(base)


def test_metrics_sum_every_worker_under_uwsgi_defaults(origin: Origin, tmp_path: Path) -> None:
    """Without py-call-osafterfork no Python at-fork hook runs: forks.check() must notice."""
    with uwsgi(env_for(origin, tmp_path, FIC_ADMIN_TOKEN=TOKEN), APP, ini=False) as base:
        check_metrics_sum_every_worker(base)


def test_uwsgi_ini_serves_the_paste_pipeline(origin: Origin, tmp_path: Path) -> None:
    """examples/uwsgi.ini as shipped: paste = config:paste.ini (FIC_* beat the ini)."""
    env = {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"demo={origin.base}/img"}
    with uwsgi(env) as base:
        status, _, page = fetch(f"{base}/")
        assert status == 200 and b'src="/_fic/o/demo/dusk.png"' in page
        for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
            status, headers, body = fetch(f"{base}/_fic/o/demo/dusk.png")
            assert (status, headers["Cache-Status"], body) == (200, cache_status, png("dusk.png"))


def test_granian_script_serves_the_flask_example(origin: Origin, tmp_path: Path) -> None:
    """examples/granian.sh without an argument: the Flask example."""
    env = {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"demo={origin.base}/img",
           "FIC_ALLOWED_NETWORKS": "127.0.0.1/32"}
    with granian(None, env) as base:
        status, _, page = fetch(f"{base}/")
        assert status == 200 and b'src="/_fic/o/demo/dusk.png"' in page
        for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
            status, headers, body = fetch(f"{base}/_fic/o/demo/dusk.png")
            assert (status, headers["Cache-Status"], body) == (200, cache_status, png("dusk.png"))
