"""kill -9 of gunicorn workers while they fetch and store many distinct images.

The origin is slow to finish each body, so a worker is nearly always somewhere between taking
a key's host lock (one fcntl byte of ``fic.lock``) and committing its record. Workers die two
ways, repeatedly:

- from outside: every few hundred milliseconds, SIGKILL to a worker holding a host lock (found
  in /proc/locks), or to any worker if none does;
- from inside (one case, :mod:`tests.reliability.killer_app`): a worker sends itself SIGKILL
  in the middle of an LMDB write transaction, before its commit, or right after it.

Afterwards: ``fic verify`` finds no damaged record, ``fic stats`` works, the LMDB environment
opens, its counters match its records, and every stored image is served byte-identical to the
origin's.
"""

from __future__ import annotations

import functools
import http.client
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import lmdb
import pytest

from fic_middleware.storage.lmdb_store import disk_size

from ..servers import ROOT, get, gunicorn
from .conftest import (
    FaultOrigin,
    assert_sane,
    call,
    head,
    run_verify,
    sized_png,
    stored_bodies,
)

pytestmark = pytest.mark.slow

KIB = 1024
KILLS = 8  # from outside; as many from inside in the second case
KEYS = 300


def _size(i: int) -> int:
    return (64 + (i * 37) % 192) * KIB  # 64 KiB .. 255 KiB: writes that take a while


@functools.cache
def _image(i: int) -> bytes:
    return sized_png(f"{i}.png", _size(i))


def _slow_tail(rest: str) -> tuple[Any, ...]:
    """The first half at once, the rest 0.15 s later."""
    body = _image(int(rest[:-4]))
    half = len(body) // 2
    return head(len(body)) + body[:half], 0.15, body[half:]


def _proc_children(parent: int) -> Iterator[tuple[int, str]]:
    """(pid, command line) of the live children of ``parent``."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="latin-1") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            if fields[0] == "Z" or int(fields[1]) != parent:
                continue
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                yield int(entry), fh.read().replace(b"\0", b" ").decode("latin-1")
        except (OSError, IndexError, ValueError):
            continue  # it exited while we looked


def _workers(base: str) -> list[int]:
    bind = base.removeprefix("http://")
    masters = [pid for pid, cmd in _proc_children(os.getpid()) if "gunicorn" in cmd and bind in cmd]
    assert len(masters) == 1, masters
    return [pid for pid, _ in _proc_children(masters[0])]


def _lock_holders(lock_file: Path) -> set[int]:
    """Processes holding an fcntl lock on ``lock_file``, from /proc/locks:
    ``1: POSIX  ADVISORY  WRITE 1234 fe:00:5678 17 17`` (pid, device:inode, first, last)."""
    try:
        inode = os.stat(lock_file).st_ino
    except FileNotFoundError:
        return set()
    holders = set()
    with open("/proc/locks", encoding="ascii") as fh:
        for line in fh:
            fields = line.split()
            if fields[1] == "POSIX" and fields[5].rsplit(":", 1)[1] == str(inode):
                holders.add(int(fields[4]))  # waiters ("2: -> POSIX ...") are skipped
    return holders


@pytest.mark.parametrize(("args", "self_kills"), [
    pytest.param(["--workers", "2"], 0, id="sync"),
    pytest.param(["--workers", "2", "--worker-class", "gthread", "--threads", "4"], KILLS,
                 id="gthread, also killed inside write transactions"),
])
def test_kill_9_of_workers_while_storing(make_mw: Any, fault_origin: FaultOrigin, tmp_path: Path,
                                         args: list[str], self_kills: int) -> None:
    cache_dir = tmp_path / "cache"
    kill_log = tmp_path / "kills.log"
    kill_log.touch()
    fault_origin.route("/k/", _slow_tail)
    env = {"FIC_CACHE_DIR": str(cache_dir), "FIC_ORIGINS": f"f={fault_origin.base}",
           "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_MAX_BYTES": "64MiB",
           "FIC_MAX_IMAGE_BYTES": "1MiB", "FIC_RETRIES": "0", "FIC_LOCK_TIMEOUT": "3s",
           "RELIABILITY_KILL_P": "0.25" if self_kills else "0", "RELIABILITY_KILL_LOG": str(kill_log),
           "RELIABILITY_KILL_MAX": str(self_kills)}
    answered: dict[int, int] = {}
    kills: list[tuple[str, int]] = []  # (whom, pid)
    rng = random.Random(8)
    with gunicorn("tests.reliability.killer_app:app", env,
                  [*args, "--graceful-timeout", "2"]) as base:
        stop = threading.Event()

        def client(i: int) -> None:
            if stop.is_set():
                return
            try:
                status, _, body = get(f"{base}/_fic/o/f/k/{i}.png", timeout=15)
            except (OSError, http.client.HTTPException):
                return  # the worker died under this request: the client sees a broken connection
            answered[i] = status
            assert status in (200, 502, 503, 504), (i, status, body[:80])
            if status == 200:
                assert body == _image(i), f"image {i}: served bytes differ from the origin's"

        with ThreadPoolExecutor(12) as pool:
            futures = [pool.submit(client, i) for i in range(KEYS)]
            time.sleep(0.5)
            for _ in range(KILLS):
                # Wait for a worker inside a fetch: on a loaded machine the replacement of the
                # last victim may still be starting, and killing it proves nothing.
                deadline = time.monotonic() + 10
                while True:
                    workers = _workers(base)
                    holders = _lock_holders(cache_dir / "fic.lock") & set(workers)
                    if holders or time.monotonic() > deadline:
                        break
                    time.sleep(0.02)
                victim = rng.choice(sorted(holders or workers))
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:  # it exited between the listing and the kill
                    continue
                kills.append(("lock holder" if holders else "any worker", victim))
                time.sleep(0.3 + rng.random() * 0.2)
            deadline = time.monotonic() + 15
            while len(kill_log.read_text().splitlines()) < self_kills and \
                    time.monotonic() < deadline:
                time.sleep(0.1)
            stop.set()
            for future in futures:
                future.result()
        assert sum(1 for whom, _ in kills if whom == "lock holder") >= KILLS // 2, kills
        assert len(kill_log.read_text().splitlines()) == self_kills, kill_log.read_text()
        assert sum(1 for s in answered.values() if s == 200) >= 10, answered

        # The replacements serve every image, fetched now or stored before the kills.
        deadline = time.monotonic() + 20
        while len(_workers(base)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        requested = sorted(set(answered) | set(range(40)))

        def again(i: int) -> None:
            status, headers, body = get(f"{base}/_fic/o/f/k/{i}.png", timeout=15)
            assert (status, body == _image(i)) == (200, True), (i, status, headers)

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(again, requested))

    # gunicorn has stopped: the operator's checks.
    verify = run_verify(cache_dir)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    report = json.loads(verify.stdout)
    assert report["corrupt"] == 0 and report["ok"] >= len(requested)
    stats = subprocess.run([sys.executable, "-m", "fic_middleware", "stats", "--cache-dir",
                            str(cache_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                            check=False)
    assert stats.returncode == 0, stats.stderr

    raw = lmdb.open(str(cache_dir), max_dbs=8, subdir=True, map_size=128 << 20)
    raw.reader_check()
    assert raw.stat()["entries"] > 0  # the named databases
    raw.close()

    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="64MiB", max_image_bytes="1MiB")
    bodies = stored_bodies(mw)
    by_key = {mw.router.route(f"/o/f/k/{i}.png", "").key: i for i in range(KEYS)}
    assert all(body == _image(by_key[key]) for key, body in bodies.items())
    storage = mw.storage.stats()
    assert storage["entries"] == len(bodies)
    assert storage["bytes"] == sum(disk_size(len(record)) for _, record in mw.storage.scan())
    fetches = sum(fault_origin.hits.values())
    for key in bodies:
        i = by_key[key]
        answer = call(mw, f"/_fic/o/f/k/{i}.png")
        assert_sane(answer, _image(i))
        assert answer.headers["Cache-Status"] == "fic; hit"
    assert sum(fault_origin.hits.values()) == fetches
