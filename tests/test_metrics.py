"""Per-host counters (metrics.Stats): what workers counted survives them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fic_middleware.metrics import Stats

from .servers import ROOT

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
