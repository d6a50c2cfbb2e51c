"""A real gunicorn with two workers answering from one shared LMDB directory."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .conftest import Origin
from .images import png
from .servers import get, gunicorn

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("args", [
    pytest.param(["--workers", "2"], id="sync"),
    pytest.param(["--workers", "2", "--preload"], id="sync preload"),
    pytest.param(["--workers", "2", "--worker-class", "gthread", "--threads", "2"], id="gthread"),
])
def test_workers_share_one_cache(origin: Origin, tmp_path: Path, args: list[str]) -> None:
    env = {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"t={origin.base}",
           "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_MAX_BYTES": "64MiB"}
    with gunicorn("tests.apps.gunicorn_app:app", env, args) as base:
        status, headers, body = get(f"{base}/_fic/o/t/img/g.png")
        assert (status, headers["Cache-Status"], body) == (200, "fic; fwd=miss; stored", png("g.png"))
        # Bursts of concurrent clients, so that a busy worker leaves connections to the
        # other, until both have answered (or 2,000 requests).
        workers: set[str] = set()
        with ThreadPoolExecutor(16) as pool:
            for _ in range(10):
                answers = pool.map(lambda _: get(f"{base}/_fic/o/t/img/g.png"), range(200))
                for status, headers, body in answers:
                    assert (status, headers["Cache-Status"], body) == (200, "fic; hit", png("g.png"))
                    workers.add(headers["X-Worker-Pid"])
                if len(workers) == 2:
                    break
        assert get(f"{base}/page")[2].isdigit()  # pass-through still reaches the app
        status, _, _ = get(f"{base}/_fic/o/t/status/404")
        assert status == 404
    assert origin.hits["/img/g.png"] == 1
    assert len(workers) == 2, "both workers should have served hits"
