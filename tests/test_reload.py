"""Reload without interruption (issue 13, part 4): ``kill -HUP`` of the gunicorn master starts
new workers, which read the changed ``config_file``, while the old ones finish what they
serve; the listening socket stays open in the master, so no request fails."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from .conftest import Origin
from .servers import get, gunicorn

pytestmark = pytest.mark.slow

_LOAD_THREADS = 4


def workers(master: int) -> set[int]:
    """The gunicorn master's worker processes (Linux: /proc/PID/task/PID/children)."""
    with open(f"/proc/{master}/task/{master}/children") as fh:
        return {int(pid) for pid in fh.read().split()}


def test_hup_reloads_the_config_file_without_failing_a_request(origin: Origin,
                                                               tmp_path: Path) -> None:
    config = tmp_path / "fic.toml"
    config.write_text(f'[fic]\norigins = {{t = "{origin.base}"}}\n')
    pidfile = tmp_path / "gunicorn.pid"
    env = {"FIC_CONFIG_FILE": str(config), "FIC_CACHE_DIR": str(tmp_path / "cache"),
           "FIC_ALLOWED_NETWORKS": "127.0.0.1/32"}
    with gunicorn("tests.apps.gunicorn_app:app", env,
                  ["--workers", "2", "--pid", str(pidfile)]) as base:
        assert get(f"{base}/_fic/o/t/img/r.png")[0] == 200
        assert get(f"{base}/_fic/o/u/img/r.png")[0] == 404  # no origin 'u' yet
        master = int(pidfile.read_text())
        old = workers(master)

        answers: Counter[str] = Counter()
        stop = threading.Event()

        def load() -> None:
            while not stop.is_set():
                for path in ("/_fic/o/t/img/r.png", "/page"):
                    try:
                        status = get(f"{base}{path}")[0]
                    except OSError as exc:
                        answers[type(exc).__name__] += 1
                    else:
                        answers[str(status)] += 1

        threads = [threading.Thread(target=load) for _ in range(_LOAD_THREADS)]
        for thread in threads:
            thread.start()
        try:
            config.write_text(f'[fic]\norigins = {{t = "{origin.base}", u = "{origin.base}"}}\n')
            os.kill(master, signal.SIGHUP)
            # Until the old workers are gone and the new config answers (bounded), under load.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (workers(master) & old or len(workers(master)) != 2):
                time.sleep(0.1)
            time.sleep(1)  # and a second of load on the new workers
        finally:
            stop.set()
            for thread in threads:
                thread.join()
        assert not workers(master) & old, "the old workers should have been replaced"
        assert get(f"{base}/_fic/o/u/img/r.png")[0] == 200  # the new file is in force
    assert set(answers) == {"200"}, answers
    assert answers["200"] > 50
