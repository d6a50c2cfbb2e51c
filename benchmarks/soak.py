#!/usr/bin/env python3
"""Memory soak of fic_middleware (the goal in docs/PERFORMANCE.md: "RSS of a worker flat (within 10%)
over a 100,000-request mixed hit/miss soak").

One process runs the middleware in process (LMDB backend, a temporary cache directory) in
front of a local origin on 127.0.0.1 (a threaded ``http.server`` in this process, HTTP/1.1
keep-alive, so a miss is a real pooled urllib3 fetch). Requests are a seeded mix:

- ``--miss-ratio`` (20%) misses: a new key each time, a PNG of 2-8 KB;
- ``--error-ratio`` (1%) errors over a few distinct paths: origin 500 (502), origin 404
  (404, then negatively cached), not an image (502), a traversal (400), unknown origin (404);
- the rest hits over a hot set of ``--hot`` (200) images.

The cache budget (``--max-bytes``, 8 MiB; 2 MiB with ``--quick``) is far below what the
misses bring, so eviction runs all along. Warm-up: the first ``--warmup`` share of the
requests (10%), and at least until the budget is full and something was evicted (from then
on the LMDB file has its working size). RSS comes from ``/proc/self/status`` (VmRSS, with
its anonymous and file-backed parts: LMDB's mapped pages count as RssFile) after warm-up
and at 10 checkpoints; the end must be within ``--tolerance`` (10%) of the post-warm-up value.
The data.mdb size is shown against ``max_bytes`` and the LMDB map.

Run from the repository root::

    .venv/bin/python benchmarks/soak.py                 # 100,000 requests (a few minutes)
    .venv/bin/python benchmarks/soak.py --quick         # 10,000 requests
    .venv/bin/python benchmarks/soak.py --requests 300000 --max-bytes 32MiB

Each checkpoint also shows the share of its misses that were stored: every image here fits
the budget, so anything below 100% means the cache stopped storing.

Exit status: 0 if the end RSS is within the tolerance, every request got the status expected
for its kind with the right bytes, and every miss after warm-up was stored; 1 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import http.server
import os
import random
import shutil
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections import Counter
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fic_middleware import FastImageCache
from fic_middleware.config import Config

CHECKPOINTS = 10


# --- the origin ------------------------------------------------------------------------------

def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(name: str) -> bytes:
    """A valid 8x8 PNG whose colour and size (2-8 KB, a filler chunk) come from ``name``."""
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    row = b"\0" + digest[:3] * 8
    size = 2048 + int.from_bytes(digest[3:6], "big") % 6144
    image = (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 2, 0, 0, 0))
             + _chunk(b"IDAT", zlib.compress(row * 8)))
    filler = hashlib.shake_256(name.encode()).digest(max(0, size - len(image) - 24))
    return image + _chunk(b"fiLl", filler) + _chunk(b"IEND", b"")


class OriginHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: urllib3 reuses its pooled connections
    disable_nagle_algorithm = True  # head and body are two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        kind, _, rest = self.path[1:].partition("/")
        if kind == "img":
            self._send(200, png(rest), "image/png", "max-age=86400")
        elif kind == "status":
            self._send(int(rest), b"origin error\n", "text/plain")
        elif kind == "html":
            self._send(200, b"<html>not an image</html>", "text/html")
        else:
            self._send(404, b"no such behaviour\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str, cache_control: str = "") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        if cache_control:
            self.send_header("Cache-Control", cache_control)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class OriginServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # The middleware closes a connection whose error body it did not read: not news.
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class Origin:
    def __init__(self) -> None:
        self.server = OriginServer(("127.0.0.1", 0), OriginHandler)
        self.base = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- measuring -------------------------------------------------------------------------------

def memory() -> dict[str, int]:
    """VmRSS and its parts, in KiB, from /proc/self/status."""
    found = {}
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile", "VmHWM"):
                found[name] = int(value.split()[0])
    return found


def mib(kib: int) -> str:
    return f"{kib / 1024:7.1f}"


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def environ_for(path: str) -> dict[str, Any]:
    return {"REQUEST_METHOD": "GET", "SCRIPT_NAME": "", "PATH_INFO": path, "QUERY_STRING": "",
            "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1",
            "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}


# --- the request mix -------------------------------------------------------------------------

ERRORS = [  # (path, expected status)
    ("/_fic/o/o/status/500", 502),
    ("/_fic/o/o/status/404", 404),
    ("/_fic/o/o/html/page", 502),
    ("/_fic/o/o/img/../secret.png", 400),
    ("/_fic/o/nope/img/x.png", 404),
]


class Mix:
    """Seeded stream of (kind, path, expected status, expected body or None)."""

    def __init__(self, seed: int, hot: int, miss_ratio: float, error_ratio: float) -> None:
        self.rng = random.Random(seed)
        self.hot = hot
        self.miss_ratio = miss_ratio
        self.error_ratio = error_ratio
        self.misses = 0

    def next(self) -> tuple[str, str, int, str | None]:
        r = self.rng.random()
        if r < self.error_ratio:
            path, status = self.rng.choice(ERRORS)
            return "error", path, status, None
        if r < self.error_ratio + self.miss_ratio:
            self.misses += 1
            name = f"m{self.misses}.png"
            return "miss", f"/_fic/o/o/img/{name}", 200, name
        name = f"h{self.rng.randrange(self.hot)}.png"
        return "hit", f"/_fic/o/o/img/{name}", 200, name


def run(args: argparse.Namespace) -> int:
    origin = Origin()
    cache_dir = args.cache_dir or tempfile.mkdtemp(prefix="fic-soak-")
    mw = FastImageCache(lambda environ, start_response: [], cache_dir=cache_dir,
                        origins={"o": origin.base}, allowed_networks=["127.0.0.1/32"],
                        max_bytes=args.max_bytes, max_image_bytes="1MiB", retries=0)
    try:
        return soak(args, mw, cache_dir)
    finally:
        mw.close()
        origin.close()
        if not args.cache_dir and not args.keep:
            shutil.rmtree(cache_dir, ignore_errors=True)


def soak(args: argparse.Namespace, mw: FastImageCache, cache_dir: str) -> int:
    data_mdb = os.path.join(cache_dir, "data.mdb")
    mix = Mix(args.seed, args.hot, args.miss_ratio, args.error_ratio)
    kinds: Counter[str] = Counter()
    wrong: Counter[str] = Counter()
    served: Counter[str] = Counter()

    def one() -> None:
        kind, path, status, name = mix.next()
        got: list[str] = []

        def start(status_line: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
            got.append(status_line)
            got.extend(value for header, value in headers if header == "Cache-Status")
        body = b"".join(mw(environ_for(path), start))
        kinds[kind] += 1
        if int(got[0][:3]) != status or (name is not None and body != png(name)):
            wrong[f"{kind}: {got[0]}"] += 1
        if len(got) > 1:
            served[got[1].removeprefix("fic; ")] += 1

    print(f"fic soak: {args.requests:,} requests, {args.miss_ratio:.0%} misses, "
          f"{args.error_ratio:.0%} errors, hot set {args.hot}, max_bytes {args.max_bytes:,} B, "
          f"pid {os.getpid()}, cache {cache_dir}")
    started = time.monotonic()
    # Warm-up: the hot set once, then the mix until the warm-up share is done and the
    # budget has been full (something evicted): the working set is in place.
    for i in range(args.hot):
        mw(environ_for(f"/_fic/o/o/img/h{i}.png"), start_response)
    done = 0
    warmup = int(args.requests * args.warmup)
    while done < warmup or mw.storage.stats()["evictions"] == 0:
        one()
        done += 1
        if done > args.requests - CHECKPOINTS * 100:
            print("the cache did not evict during warm-up: lower --max-bytes or raise --requests")
            return 1
    gc.collect()
    base = memory()
    measured = args.requests - done
    print(f"warm-up: {done:,} requests in {time.monotonic() - started:.1f} s; "
          f"post-warm-up VmRSS {mib(base['VmRSS'])} MiB (anon {mib(base['RssAnon'])}, "
          f"file {mib(base['RssFile'])})")
    print(f"{'checkpoint':>10} {'requests':>9} {'VmRSS MiB':>10} {'anon':>7} {'file':>7} "
          f"{'vs warm':>8} {'req/s':>7} {'entries':>7} {'data.mdb MiB':>12} {'misses stored':>13}")
    t0 = time.monotonic()
    last = base
    unstored = 0
    for checkpoint in range(1, CHECKPOINTS + 1):
        target = measured * checkpoint // CHECKPOINTS
        before = served.copy()
        while done - (args.requests - measured) < target:
            one()
            done += 1
        gc.collect()
        last = memory()
        elapsed = time.monotonic() - t0
        window = served - before
        unstored += window["fwd=miss"]
        stored_share = window["fwd=miss; stored"] / max(1, window["fwd=miss; stored"] + window["fwd=miss"])
        print(f"{checkpoint:>10} {done:>9,} {mib(last['VmRSS']):>10} {mib(last['RssAnon']):>7} "
              f"{mib(last['RssFile']):>7} {last['VmRSS'] / base['VmRSS'] - 1:>+8.1%} "
              f"{(done - (args.requests - measured)) / elapsed:>7.0f} "
              f"{mw.storage.stats()['entries']:>7} {os.path.getsize(data_mdb) / 2**20:>12.1f} "
              f"{stored_share:>13.0%}")
    growth = last["VmRSS"] / base["VmRSS"] - 1
    anon_growth = last["RssAnon"] / base["RssAnon"] - 1
    flat = abs(growth) <= args.tolerance
    stats = mw.storage.stats()
    size = os.path.getsize(data_mdb)
    map_size = getattr(mw.storage, "map_size", 0)
    print(f"requests: {dict(kinds)}; Cache-Status: {dict(served)}")
    print(f"wrong answers: {dict(wrong) or 'none'}")
    if unstored:
        print(f"NOT STORED: {unstored:,} misses after warm-up were served but not stored "
              "(every image is storable here: the cache stopped storing)")
    print(f"RSS: post-warm-up {mib(base['VmRSS']).strip()} MiB, end {mib(last['VmRSS']).strip()} MiB "
          f"({growth:+.1%}; anonymous {anon_growth:+.1%}); peak {mib(last['VmHWM']).strip()} MiB; "
          f"{'FLAT: within' if flat else 'NOT FLAT: beyond'} {args.tolerance:.0%}")
    print(f"data.mdb: {size / 2**20:.1f} MiB = {size / args.max_bytes:.2f}x max_bytes "
          f"({args.max_bytes / 2**20:.1f} MiB); map {map_size / 2**20:.1f} MiB "
          f"({'within' if size <= map_size else 'BEYOND'} the map); stored "
          f"{stats['bytes'] / 2**20:.1f} MiB in {stats['entries']} entries "
          f"({'within' if stats['bytes'] <= args.max_bytes else 'BEYOND'} max_bytes), "
          f"{stats['evictions']:,} evictions")
    print(f"total {time.monotonic() - started:.1f} s")
    return 0 if flat and not wrong and not unstored else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=None,
                        help="requests in all, warm-up included (default 100000; 10000 with --quick)")
    parser.add_argument("--quick", action="store_true", help="10,000 requests, a 2 MiB budget")
    parser.add_argument("--hot", type=int, default=200, help="images in the hot set (200)")
    parser.add_argument("--miss-ratio", type=float, default=0.2)
    parser.add_argument("--error-ratio", type=float, default=0.01)
    parser.add_argument("--max-bytes", type=parse_size_arg, default=None,
                        help="cache budget (8MiB; 2MiB with --quick)")
    parser.add_argument("--warmup", type=float, default=0.1, help="share of requests (0.1)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed RSS drift (0.10)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--cache-dir", help="use this directory (kept) instead of a temporary one")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache directory")
    args = parser.parse_args(argv)
    if args.requests is None:
        args.requests = 10_000 if args.quick else 100_000
    if args.max_bytes is None:
        args.max_bytes = (2 if args.quick else 8) << 20
    return run(args)


def parse_size_arg(text: str) -> int:
    """``8MiB``, ``512KiB``, bytes: the middleware's own size syntax."""
    try:
        return Config.load(environ={}, backend="memory", max_bytes=text, max_image_bytes=1).max_bytes
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
