"""Per-process counters: fork safety of the at-fork hook, and what it keeps alive."""

from __future__ import annotations

import gc
import json
import os
import weakref
from pathlib import Path
from typing import Any

import pytest

from fic_middleware.metrics import Stats


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
