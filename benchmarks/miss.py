#!/usr/bin/env python3
"""A cache miss against its floor, in one process (goals: docs/PERFORMANCE.md, "Misses").

The floor of a miss is what any cache must do for it: one GET of the image from the origin
and one LMDB write transaction that stores it. The origin is gunicorn (gthread, keep-alive)
on 127.0.0.1 answering any path with the same 50 KB PNG (``benchmarks.http_apps:origin``).
Variants, each a new URL per request:

- ``get``          urllib3 ``PoolManager.request("GET", url)``, the body read;
- ``write``        one LMDB write transaction putting a 50 KB record under a new key, the
                   environment opened as the cache opens it (``metasync=False``, ``sync=True``);
- ``write_nosync`` the same with ``sync=False``: the cost of the commit's ``fdatasync``;
- ``floor``        ``get`` then ``write``;
- ``miss``         ``FastImageCache`` answering a new path (route, fetch through the guarded
                   pool, checks, record, store with eviction, response).

Batches of ``--batch`` requests per variant, interleaved in ``--rounds`` rounds in a fresh
order each round (the machine is shared); a figure is the median of the batches, in us per
request: wall time, and this process's CPU time (the origin runs in its own processes).

Run from the repository root: ``benchmarks/run miss [--quick] [--json FILE]``. The cache and
LMDB directories are made under ``$TMPDIR`` (a disk; ``TMPDIR=/dev/shm`` shows tmpfs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import lmdb
import urllib3

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from http_bench import Processes, free_port, gunicorn_argv, make_png, wait_ready  # noqa: E402

from fic_middleware import FastImageCache  # noqa: E402
from fic_middleware.record import Entry, encode, strong_etag  # noqa: E402

PREFIX = "/_fic"


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def environ_for(path: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
            "RAW_URI": path, "SERVER_PROTOCOL": "HTTP/1.1", "SERVER_NAME": "127.0.0.1",
            "SERVER_PORT": "8000", "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (5 instead of 15)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (15; quick 5)")
    parser.add_argument("--batch", type=int, default=40, help="requests per batch (40)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    args = parser.parse_args(argv)
    rounds = args.rounds or (5 if args.quick else 15)
    tmp = tempfile.mkdtemp(prefix="fic-miss-")
    procs = Processes(tmp)
    try:
        return run(args, tmp, procs, rounds)
    finally:
        procs.stop_all()
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: str, procs: Processes, rounds: int) -> int:
    body = make_png()
    png = os.path.join(tmp, "bench.png")
    with open(png, "wb") as f:
        f.write(body)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIC_")}
    env["BENCH_PNG"] = png
    port = free_port()
    oargs = argparse.Namespace(workers=2, gthreads=4)
    origin = procs.start("origin", gunicorn_argv("benchmarks.http_apps:origin", port,
                                                 "gthread", oargs), env=env)
    base = f"http://127.0.0.1:{port}/img"
    wait_ready(f"{base}/ready.png", origin, "origin", procs)

    pool = urllib3.PoolManager()
    envs = {flag: lmdb.open(os.path.join(tmp, f"floor-{flag}"), map_size=4 << 30, max_dbs=8,
                            subdir=True, readahead=False, metasync=False, sync=flag == "sync")
            for flag in ("sync", "nosync")}
    dbs = {flag: e.open_db(b"records") for flag, e in envs.items()}
    now = time.time()
    mw = FastImageCache(lambda environ, sr: [], cache_dir=os.path.join(tmp, "cache"),
                        origins={"b": base}, allowed_networks=["127.0.0.1/32"],
                        max_bytes="256MiB")
    counter = iter(range(1 << 40))

    def record(key: bytes) -> bytes:
        return encode(Entry(body, "image/png", strong_etag(body), None, None, now, now + 3600),
                      key)

    def get() -> None:
        response = pool.request("GET", f"{base}/floor/{next(counter)}.png")
        assert response.status == 200 and len(response.data) == len(body)

    def write(flag: str = "sync") -> None:
        key = next(counter).to_bytes(16, "little")
        with envs[flag].begin(write=True, db=dbs[flag]) as txn:
            txn.put(key, record(key))

    def floor() -> None:
        get()
        write()

    def miss() -> None:
        status: list[str] = []
        chunks = mw(environ_for(f"{PREFIX}/o/b/miss/{next(counter)}.png"),
                    lambda s, h, e=None: status.append(dict(h)["Cache-Status"]))
        assert b"".join(chunks) == body and status == ["fic; fwd=miss; stored"], status

    variants: dict[str, Callable[[], None]] = {
        "get": get, "write": write, "write_nosync": lambda: write("nosync"),
        "floor": floor, "miss": miss,
    }
    for fn in variants.values():  # warm: connections, environments, imports
        for _ in range(5):
            fn()
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    order = list(variants)
    rng = random.Random(0)
    print(f"fic_middleware miss benchmark: {len(body):,}-byte PNG, {rounds} interleaved rounds "
          f"of {args.batch} requests per variant, cache in {tmp} "
          f"(python {platform.python_version()}, lmdb {lmdb.version()}, "
          f"urllib3 {urllib3.__version__})", flush=True)
    load_before = os.getloadavg()
    for _ in range(rounds):
        rng.shuffle(order)
        for name in order:
            fn = variants[name]
            c0, t0 = time.process_time_ns(), time.perf_counter_ns()
            for _ in range(args.batch):
                fn()
            wall[name].append((time.perf_counter_ns() - t0) / args.batch / 1000)
            cpu[name].append((time.process_time_ns() - c0) / args.batch / 1000)
    load_after = os.getloadavg()

    results = {name: {"wall_us": statistics.median(wall[name]),
                      "cpu_us": statistics.median(cpu[name]),
                      "wall_samples_us": wall[name], "cpu_samples_us": cpu[name]}
               for name in variants}
    labels = {"get": "urllib3 GET from the origin", "write": "LMDB write txn (sync, as the cache)",
              "write_nosync": "LMDB write txn, sync=False", "floor": "floor: GET + write txn",
              "miss": "fic_middleware miss"}
    print(f"\n{'variant':<40} {'wall us':>9} {'CPU us':>9}")
    for name, label in labels.items():
        r = results[name]
        print(f"{label:<40} {r['wall_us']:>9.0f} {r['cpu_us']:>9.0f}")
    ratios = {
        "miss_over_floor_wall": results["miss"]["wall_us"] / results["floor"]["wall_us"],
        "miss_over_floor_cpu": results["miss"]["cpu_us"] / results["floor"]["cpu_us"],
        "fsync_us": results["write"]["wall_us"] - results["write_nosync"]["wall_us"],
    }
    print(f"\nmiss / floor, wall    {ratios['miss_over_floor_wall']:5.2f}x   (target <= 1.5: "
          f"{'ok' if ratios['miss_over_floor_wall'] <= 1.5 else 'MISSED'})")
    print(f"miss / floor, CPU     {ratios['miss_over_floor_cpu']:5.2f}x")
    print(f"commit fdatasync      {ratios['fsync_us']:5.0f} us (write sync - write nosync)")
    print(f"(load average {' '.join(f'{x:.2f}' for x in load_before)} before, "
          f"{' '.join(f'{x:.2f}' for x in load_after)} after)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"benchmark": "miss", "rounds": rounds, "batch": args.batch,
                       "results": results, "ratios": ratios,
                       "load": [load_before, load_after]}, f, indent=2)
            f.write("\n")
    mw.close()
    pool.clear()
    for e in envs.values():
        e.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
