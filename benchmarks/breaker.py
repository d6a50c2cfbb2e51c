#!/usr/bin/env python3
"""What a dead origin costs the app behind the middleware, with and without the breaker.

gunicorn runs ``tests.apps.gunicorn_app`` with 4 sync workers. For each scenario, client
threads load it for ``--seconds``: ``--pages`` threads ask for a pass-through page (the app's
own traffic) in a loop, ``--misses`` threads ask for a new image each time (every request a
miss). The origin is, in turn:

- ``healthy``                 a local threaded origin answering every path with a PNG;
- ``black hole``              accepts connections and never answers (read_timeout per miss);
- ``never accepts``           a full accept queue: connects hang (connect_timeout per attempt);

each dead one with the breaker on (``breaker_failures`` 5) and off (0). After a warm-up
(while a dead origin's first misses hold workers for their timeouts, until the circuit
opens), the figures are the p50/p99 latency of the pass-through pages and of the misses,
the pages served, and the misses by status. The comparison that matters is pass-through p99
of a dead origin (breaker on) against the healthy run: it should stay within 2x, while
without the breaker the app's pages queue behind workers stuck on the origin.

Run from the repository root: ``.venv/bin/python benchmarks/breaker.py [--seconds 10]``.
Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from werkzeug.serving import make_server  # noqa: E402

from tests.images import png  # noqa: E402
from tests.servers import BlackHole, Unaccepting, get, gunicorn  # noqa: E402

_PNG = png("bench")
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the origin's access log


def _origin_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", str(len(_PNG))),
                              ("Cache-Control", "max-age=3600")])
    return [_PNG]


@contextmanager
def healthy() -> Iterator[int]:
    server = make_server("127.0.0.1", 0, _origin_app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def dead(kind: type[BlackHole | Unaccepting]) -> Iterator[int]:
    origin = kind()
    try:
        yield origin.port
    finally:
        origin.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def measure(port: int, breaker_failures: int, args: argparse.Namespace) -> dict[str, Any]:
    """Load for ``--warmup`` + ``--seconds``; figures of the requests that ended after the
    warm-up (the steady state: a tripped circuit, or workers stuck without one), and how
    many misses the warm-up cost."""
    with tempfile.TemporaryDirectory() as cache:
        env = {"FIC_CACHE_DIR": cache, "FIC_ORIGINS": f"t=http://127.0.0.1:{port}",
               "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_CONNECT_TIMEOUT": args.timeout,
               "FIC_READ_TIMEOUT": args.timeout, "FIC_BREAKER_FAILURES": str(breaker_failures)}
        with gunicorn("tests.apps.gunicorn_app:app", env, ["--workers", "4"]) as base:
            samples: list[tuple[float, str, float, int]] = []  # (ended, kind, seconds, status)
            lock = threading.Lock()
            stop = threading.Event()
            counter = iter(range(10**9))

            def client(kind: str) -> None:
                while not stop.is_set():
                    if kind == "page":
                        url = f"{base}/page"
                    else:
                        with lock:
                            url = f"{base}/_fic/o/t/img/{next(counter)}.png"
                    started = time.perf_counter()
                    status = get(url, timeout=120)[0]
                    ended = time.perf_counter()
                    with lock:
                        samples.append((ended, kind, ended - started, status))

            threads = [threading.Thread(target=client, args=("page",)) for _ in range(args.pages)] + \
                      [threading.Thread(target=client, args=("miss",)) for _ in range(args.misses)]
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            time.sleep(args.warmup + args.seconds)
            stop.set()
            for thread in threads:
                thread.join()
    steady = began + args.warmup
    pages = [s for ended, kind, s, _ in samples if kind == "page" and ended >= steady]
    misses = [(s, status) for ended, kind, s, status in samples if kind == "miss" and ended >= steady]
    warmup = Counter(str(status) for ended, kind, _, status in samples
                     if kind == "miss" and ended < steady)
    return {"pages": len(pages), "page_p50": percentile(pages, 50), "page_p99": percentile(pages, 99),
            "miss_p50": percentile([s for s, _ in misses], 50),
            "miss_p99": percentile([s for s, _ in misses], 99),
            "statuses": dict(sorted(Counter(str(status) for _, status in misses).items())),
            "warmup": dict(sorted(warmup.items()))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured load per scenario")
    parser.add_argument("--warmup", type=float, default=15.0,
                        help="load before measuring: long enough for breaker_failures misses "
                             "to fail (two waves of connect_timeout x (retries + 1))")
    parser.add_argument("--pages", type=int, default=4, help="pass-through client threads")
    parser.add_argument("--misses", type=int, default=4, help="miss client threads")
    parser.add_argument("--timeout", default="2s", help="connect_timeout and read_timeout")
    args = parser.parse_args()
    scenarios: list[tuple[str, Callable[[], Any], int]] = [
        ("healthy", healthy, 5),
        ("black hole, breaker on", lambda: dead(BlackHole), 5),
        ("black hole, breaker off", lambda: dead(BlackHole), 0),
        ("never accepts, breaker on", lambda: dead(Unaccepting), 5),
        ("never accepts, breaker off", lambda: dead(Unaccepting), 0),
    ]
    rows = []
    for name, origin, failures in scenarios:
        with origin() as port:
            result = measure(port, failures, args)
        rows.append((name, result))
        print(f"{name}: {result}", file=sys.stderr)
    baseline = rows[0][1]["page_p99"]
    print(f"4 sync workers, {args.pages} page + {args.misses} miss client threads; "
          f"{args.warmup:g} s of warm-up, then {args.seconds:g} s measured; "
          f"connect/read timeout {args.timeout}, retries 2\n")
    print("| origin | pages served | page p50 ms | page p99 ms | p99 / healthy | "
          "miss p50 ms | miss p99 ms | misses by status | warm-up misses by status |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|")
    for name, r in rows:
        print(f"| {name} | {r['pages']} | {1000 * r['page_p50']:.1f} | {1000 * r['page_p99']:.1f} | "
              f"{r['page_p99'] / baseline:.2f} | {1000 * r['miss_p50']:.1f} | "
              f"{1000 * r['miss_p99']:.1f} | "
              f"{', '.join(f'{k}: {v}' for k, v in r['statuses'].items())} | "
              f"{', '.join(f'{k}: {v}' for k, v in r['warmup'].items())} |")
    print(f"\nload average after the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
          f"on {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
