"""Per-process counters summed over a host's workers: fork safety, what the hook keeps
alive, and the counts of workers that exited."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import pytest

from fic_middleware.metrics import Stats

from .servers import ROOT


def test_totals_registers_no_fork_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every admin request reads the totals: a handler per call would pile up, and each
    would run in every forked child."""
    registered: list[Any] = []
    monkeypatch.setattr(os, "register_at_fork", lambda **hooks: registered.append(hooks))
    stats = Stats(str(tmp_path / "stats"))
    for _ in range(100):
        stats.totals()
    assert registered == []


def test_the_fork_hook_keeps_no_stats_alive(tmp_path: Path) -> None:
    stats = Stats(str(tmp_path / "stats"))
    stats.totals()
    gone = weakref.ref(stats)
    del stats
    gc.collect()
    assert gone() is None


def test_a_forked_child_starts_from_zero(tmp_path: Path) -> None:
    stats = Stats(str(tmp_path / "stats"))
    stats.result("miss")
    stats.hit += 3
    stats.start()  # a flusher thread, which the child does not have
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        try:
            os.write(write, json.dumps([stats.snapshot()["results"], stats.running]).encode())
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    results, running = json.loads(os.read(read, 4096))
    os.close(read)
    os.close(write)
    assert results == dict.fromkeys(results, 0) and running is False
    assert stats.snapshot()["results"]["hit"] == 3  # the parent keeps its own
    stats.stop()


WORKER = """
import sys
from fic_middleware.metrics import Stats
stats = Stats(sys.argv[1])
stats.hit += 3
stats.result("miss")
stats.error(404)
stats.fetched("cdn", 0.01, 1000)
stats.flush()
"""


def run_worker(directory: Path) -> None:
    """A worker process that counts, writes its file and exits (as gunicorn's do)."""
    subprocess.run([sys.executable, "-c", WORKER, str(directory)], cwd=ROOT, check=True,
                   timeout=60)


def test_an_exited_workers_counts_fold_into_retired(tmp_path: Path) -> None:
    run_worker(tmp_path)
    totals = Stats(str(tmp_path)).totals()
    assert (totals["results"]["hit"], totals["results"]["miss"]) == (3, 1)
    assert totals["errors"] == {"404": 1} and totals["fetches"] == {"cdn": 1}
    retired = json.loads((tmp_path / "retired.json").read_text())
    assert retired["results"]["hit"] == 3
    others = {p.name for p in tmp_path.glob("*.json")} - {"retired.json"}
    assert all(name.startswith(f"{os.getpid()}.") for name in others)  # only the reader's


def test_totals_never_go_back_when_workers_are_replaced(tmp_path: Path) -> None:
    reader = Stats(str(tmp_path))
    seen = []
    for _ in range(3):
        run_worker(tmp_path)
        seen.append(reader.totals()["results"]["hit"])
    assert seen == [3, 6, 9]
