#!/usr/bin/env python3
"""In-process micro-benchmark of the fic_middleware hit path (goals: docs/PERFORMANCE.md).

Everything runs in one process, on the same 50 KB PNG-signature body, with the same calling
convention for every variant: a fresh shallow copy of a prepared environ per call, a no-op
``start_response``, the returned iterable fully iterated.

Variants (us per request):

- ``loop``         the harness alone: environ copy + call of an app that returns ``()``;
- ``bare``         a WSGI app returning the body from memory;
- ``raw_lmdb``     a WSGI app doing ``with env.begin() as txn: body = txn.get(key)``;
- ``hit``          FastImageCache serving a fresh, pre-stored entry;
- ``pt_direct``    a trivial app called directly, path outside the prefix;
- ``pt_wrapped``   the same app behind FastImageCache (pass-through);
- ``scale_small`` / ``scale_large``  hits cycling over 1,000 small entries sampled from a cache
  holding 1,000 entries / ``--entries`` entries (only when ``--entries`` > 1000).

Timing: each variant is calibrated to a batch of about ``--batch-ms`` milliseconds; then
``--repeats`` rounds each time one batch of every variant, in a fresh random order (so drift
and neighbours on a shared machine hit all variants alike), GC off during a batch. A
variant's figure is the median of its lowest three batches ("low3"); the minimum and the
median of all batches are shown too.

Run from the repository root: ``benchmarks/run inprocess [--quick] [--entries N] [--json FILE]``;
``--breakdown`` adds a timing of the pieces of the hit path.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import gc
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

from fic_middleware import FastImageCache
from fic_middleware.storage.lmdb_store import disk_size
from fic_middleware.record import Entry, encode, strong_etag

perf_counter_ns = time.perf_counter_ns

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
BODY_SIZE = 50 * 1024
HIT_PATH = "/_fic/o/b/bench/hit.png"
PASS_PATH = "/app/page"
ORIGINS = {"b": "http://127.0.0.1:9/x"}
FAR_FUTURE = 10 * 365 * 86400.0
SCALE_BASE = 1000      # entries of the reference cache for the flat-with-size ratio
SCALE_SAMPLE = 1000    # distinct paths a scale batch cycles over (< the route memo size)

TARGETS = {
    "hit_over_raw_lmdb": 1.2,     # <= 1.2x a raw lmdb txn.get app (issue 15)
    "pass_through_added_us": 0.5,  # < 0.5 us added over calling the app directly
    "scale_large_over_small": 1.2,  # hit at 1M entries within 1.2x of hit at 1,000
}


def make_body(size: int, seed: int = 1) -> bytes:
    return PNG_SIGNATURE + random.Random(seed).randbytes(size - len(PNG_SIGNATURE))


def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
    return None


def base_environ(path: str) -> dict[str, Any]:
    """What gunicorn's sync worker hands an app for a plain GET (minus the socket objects)."""
    return {
        "REQUEST_METHOD": "GET",
        "SCRIPT_NAME": "",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "RAW_URI": path,
        "SERVER_PROTOCOL": "HTTP/1.1",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "REMOTE_ADDR": "127.0.0.1",
        "REMOTE_PORT": "50000",
        "HTTP_HOST": "127.0.0.1:8000",
        "HTTP_USER_AGENT": "bench/1.0",
        "HTTP_ACCEPT": "image/avif,image/webp,image/png,*/*",
        "HTTP_ACCEPT_ENCODING": "gzip, deflate",
        "HTTP_CONNECTION": "keep-alive",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "http",
        "wsgi.input": None,
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "gunicorn.socket": None,
    }


# --- the apps -----------------------------------------------------------------------------

def empty_app(environ: dict, start_response: Callable) -> tuple:
    return ()


def make_bare_app(body: bytes) -> Callable:
    def bare_app(environ: dict, start_response: Callable) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "image/png"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return bare_app


def make_raw_lmdb_app(env: lmdb.Environment, key: bytes) -> Callable:
    def raw_lmdb_app(environ: dict, start_response: Callable) -> list[bytes]:
        with env.begin() as txn:
            body = txn.get(key)
        start_response("200 OK", [("Content-Type", "image/png"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return raw_lmdb_app


_PAGE = [b"hello"]


def trivial_app(environ: dict, start_response: Callable) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "5")])
    return _PAGE


# --- the harness --------------------------------------------------------------------------

def one_env_runner(app: Callable, environ: dict) -> Callable[[int], int]:
    """A batch of n calls of app with a fresh shallow copy of environ; returns ns."""
    def run(n: int) -> int:
        copy = environ.copy
        sr = start_response
        a = app
        t0 = perf_counter_ns()
        for _ in range(n):
            for _chunk in a(copy(), sr):
                pass
        return perf_counter_ns() - t0
    return run


def many_env_runner(app: Callable, environs: list[dict]) -> Callable[[int], int]:
    """Like one_env_runner, cycling over environs (n is rounded up to a whole cycle)."""
    def run(n: int) -> int:
        sr = start_response
        a = app
        rounds = max(1, -(-n // len(environs)))
        t0 = perf_counter_ns()
        for _ in range(rounds):
            for e in environs:
                for _chunk in a(e.copy(), sr):
                    pass
        return perf_counter_ns() - t0
    return run


def func_runner(fn: Callable[[], Any]) -> Callable[[int], int]:
    """A batch of n calls of a no-argument function (used by --breakdown)."""
    def run(n: int) -> int:
        f = fn
        t0 = perf_counter_ns()
        for _ in range(n):
            f()
        return perf_counter_ns() - t0
    return run


def calibrate(run: Callable[[int], int], batch_ns: int, multiple: int = 1) -> int:
    n = multiple
    run(n)  # warm-up
    while True:
        elapsed = run(n)
        if elapsed >= batch_ns / 4 or n >= 1 << 26:
            break
        n *= 4
    n = max(multiple, int(n * batch_ns / max(elapsed, 1)))
    return -(-n // multiple) * multiple


def measure(runners: dict[str, tuple[Callable[[int], int], int]], repeats: int,
            batch_ns: int, seed: int = 0) -> dict[str, dict[str, Any]]:
    """Interleaved rounds; per variant the per-call us of every batch and their summary."""
    ns_per_call: dict[str, list[float]] = {name: [] for name in runners}
    counts = {name: calibrate(run, batch_ns, multiple) for name, (run, multiple) in runners.items()}
    order = list(runners)
    rng = random.Random(seed)
    gc_was_enabled = gc.isenabled()
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            run, _multiple = runners[name]
            n = counts[name]
            gc.collect()
            gc.disable()
            try:
                elapsed = run(n)
            finally:
                if gc_was_enabled:
                    gc.enable()
            ns_per_call[name].append(elapsed / n)
    results = {}
    for name, samples in ns_per_call.items():
        us = sorted(s / 1000 for s in samples)
        results[name] = {
            "calls_per_batch": counts[name],
            "batches": len(us),
            "low3_us": statistics.median(us[:3]),
            "min_us": us[0],
            "median_us": statistics.median(us),
            "samples_us": [s / 1000 for s in samples],  # in round order
        }
    return results


# --- fixtures -----------------------------------------------------------------------------

def new_cache(cache_dir: str) -> FastImageCache:
    return FastImageCache(trivial_app, cache_dir=cache_dir, origins=ORIGINS,
                          allowed_networks=["127.0.0.1/32"])


def record_for(key: bytes, body: bytes, now: float) -> bytes:
    return encode(Entry(body, "image/png", strong_etag(body), None, None, now, now + FAR_FUTURE),
                  key)


def store_entry(mw: FastImageCache, path: str, body: bytes) -> None:
    prefix = mw.config.prefix
    assert path.startswith(prefix + "/")
    key = mw.router.route(path[len(prefix):]).key
    if not mw.storage.put(key, record_for(key, body, time.time())):
        raise SystemExit(f"could not store the entry for {path}")


def scale_path(i: int) -> str:
    return f"/_fic/o/b/scale/{i:07d}.png"


def fill(mw: FastImageCache, count: int, body_size: int, label: str) -> None:
    """Store ``count`` small entries. Batched in few write transactions through the LMDB
    store's internals (one ``put`` per entry would commit and fsync a million times);
    falls back to ``put`` if those internals changed."""
    store = mw.storage
    prefix_len = len(mw.config.prefix)
    route = mw.router.route
    now = time.time()
    filler = random.Random(7).randbytes(max(0, body_size - len(PNG_SIGNATURE) - 8))
    t0 = time.monotonic()

    def items(start: int, stop: int):
        for i in range(start, stop):
            body = PNG_SIGNATURE + i.to_bytes(8, "little") + filler
            key = route(scale_path(i)[prefix_len:]).key
            yield key, record_for(key, body, now)

    def insert_batch(start: int, stop: int):
        # One write transaction per batch (LMDBStore internals): a commit per entry would
        # mean a million fsyncs.
        def change(ledger) -> None:
            for key, value in items(start, stop):
                ledger.txn.put(key, value, db=ledger.h.records)
                store.policy.admit(ledger, key, disk_size(len(value)), now + FAR_FUTURE)
        store._write(change)

    batch = 20000
    for start in range(0, count, batch):
        stop = min(count, start + batch)
        insert_batch(start, stop)
        if count > 100000 and (stop % 200000 == 0 or stop == count):
            print(f"  {label}: {stop:,}/{count:,} entries "
                  f"({time.monotonic() - t0:.0f}s)", file=sys.stderr, flush=True)
    stats = store.stats()
    if stats.get("entries") != count:
        raise SystemExit(f"{label}: expected {count} entries, the store says {stats}")


# --- the report ---------------------------------------------------------------------------

def table(results: dict[str, dict[str, Any]], labels: dict[str, str]) -> str:
    lines = [f"{'variant':<44} {'low3 us':>9} {'min us':>9} {'median us':>10} {'calls/batch':>12}"]
    for name, label in labels.items():
        if name not in results:
            continue
        r = results[name]
        lines.append(f"{label:<44} {r['low3_us']:>9.3f} {r['min_us']:>9.3f} "
                     f"{r['median_us']:>10.3f} {r['calls_per_batch']:>12,}")
    return "\n".join(lines)


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def breakdown(mw: FastImageCache, path: str, repeats: int, batch_ns: int) -> dict[str, Any]:
    """The pieces of the hit path, timed alone with the same harness."""
    import zlib

    from xxhash import xxh3_64_intdigest

    from fic_middleware import responses
    from fic_middleware.record import decode

    rel = path[len(mw.config.prefix):]
    request = mw.router.route(rel)
    key = request.key
    store = mw.storage
    h = store._handle or store._open()
    with h.env.begin(db=h.records) as txn:
        record = txn.get(key)
    entry = decode(record, key, mw.parts.tiers.reader.sealer)
    now = time.time()
    environ = base_environ(path)
    record_view = memoryview(record)
    body_view = record_view[len(record) - len(entry.body):]
    max_age = mw.config.client_max_age
    reader = mw.parts.tiers.reader
    hit = responses.hit_response(entry, now, max_age)

    def lmdb_get_view() -> None:  # what storage.get does around the decode
        txn = h.env.begin(db=h.records, buffers=True)
        try:
            txn.get(key)
        finally:
            txn.abort()

    def lmdb_get_copy() -> None:
        with h.env.begin(db=h.records) as txn:
            txn.get(key)

    def environ_gets() -> None:  # what _respond reads from the environ on a plain GET
        environ.get("PATH_INFO", "")
        environ["REQUEST_METHOD"]
        environ.get("RAW_URI") or environ.get("REQUEST_URI")
        environ.get("HTTP_IF_NONE_MATCH")
        environ.get("HTTP_IF_MODIFIED_SINCE")
        environ.get("HTTP_RANGE")

    respond = mw._respond
    cache_respond = mw.cache.respond
    pieces = {
        "route (memo hit)": lambda: mw.router.route(rel, "", path),
        "environ reads of a GET (6 gets)": environ_gets,
        "lmdb begin+get+abort, buffers (no decode)": lmdb_get_view,
        "lmdb begin+get, copy to bytes (raw app)": lmdb_get_copy,
        "storage.get(key, reader.decode) (memo hit)": lambda: store.get(key, reader.decode),
        "  reader.decode(key, view) (memo hit)": lambda: reader.decode(key, record_view),
        "    xxh3_64 of the whole record": lambda: xxh3_64_intdigest(record_view),
        "decode(record, key) (memo miss)": lambda: decode(record_view, key, reader.sealer),
        "  bytes(view) copy of the 50 KB body": lambda: bytes(body_view),
        "  crc32 header+meta": lambda: zlib.crc32(body_view[:40]),
        "responses.hit_response (same second)": lambda: responses.hit_response(entry, now, max_age),
        "responses.image_response (new second)": lambda: responses.image_response(
            entry, responses.HIT, now, max_age),
        "list(response.headers) (start_response copy)": lambda: list(hit.headers),
        "time.time()": time.time,
        "cache.hit(key) (the memo hit)": lambda: mw.cache.hit(key),
        "cache.respond(request) (read, hash, mark)": lambda: cache_respond(request),
        "mw._respond(environ, method, path)": lambda: respond(environ, "GET", rel),
        "mw(environ.copy(), sr) full call": lambda: mw(environ.copy(), start_response),
    }
    runners = {name: (func_runner(fn), 1) for name, fn in pieces.items()}
    return measure(runners, repeats, batch_ns, seed=1)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a short run (fewer, shorter batches)")
    parser.add_argument("--entries", type=int, default=SCALE_BASE,
                        help=f"entries of the large cache for the scale test (default "
                             f"{SCALE_BASE}; the contract figure is 1000000, which takes minutes)")
    parser.add_argument("--entry-bytes", type=int, default=256,
                        help="body size of the scale entries (default 256)")
    parser.add_argument("--repeats", type=int, help="rounds (default 25, quick 7)")
    parser.add_argument("--batch-ms", type=float, help="target batch length (default 20, quick 5)")
    parser.add_argument("--breakdown", action="store_true", help="also time the hit path's pieces")
    parser.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache dirs")
    args = parser.parse_args(argv)
    repeats = args.repeats or (7 if args.quick else 25)
    batch_ns = int((args.batch_ms or (5.0 if args.quick else 20.0)) * 1e6)
    if args.entries < 1:
        parser.error("--entries must be >= 1")

    tmp = tempfile.mkdtemp(prefix="fic-bench-")
    try:
        return run(args, tmp, repeats, batch_ns)
    finally:
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, tmp: str, repeats: int, batch_ns: int) -> int:
    body = make_body(BODY_SIZE)

    # b. raw LMDB
    raw_env = lmdb.open(os.path.join(tmp, "raw"), map_size=64 * 1024 * 1024)
    raw_key = b"k" * 16
    with raw_env.begin(write=True) as txn:
        txn.put(raw_key, body)

    # c. the middleware, hit
    mw = new_cache(os.path.join(tmp, "hit"))
    store_entry(mw, HIT_PATH, body)
    hit_env = base_environ(HIT_PATH)
    status: list[Any] = []
    chunks = list(mw(hit_env.copy(), lambda s, h, e=None: status.extend((s, h))))
    if not status or not status[0].startswith("200") or b"".join(chunks) != body:
        raise SystemExit(f"the hit path did not serve the stored body: {status}")
    cache_status = dict(status[1]).get("Cache-Status")
    if cache_status != "fic; hit":
        raise SystemExit(f"expected a hit, got Cache-Status {cache_status!r}")

    # d. pass-through
    pt_env = base_environ(PASS_PATH)

    runners: dict[str, tuple[Callable[[int], int], int]] = {
        "loop": (one_env_runner(empty_app, hit_env), 1),
        "bare": (one_env_runner(make_bare_app(body), hit_env), 1),
        "raw_lmdb": (one_env_runner(make_raw_lmdb_app(raw_env, raw_key), hit_env), 1),
        "hit": (one_env_runner(mw, hit_env), 1),
        "pt_direct": (one_env_runner(trivial_app, pt_env), 1),
        "pt_wrapped": (one_env_runner(mw, pt_env), 1),
    }

    # scale: hits cycling over SCALE_SAMPLE small entries, at 1,000 and at --entries entries
    sizes = sorted({min(args.entries, SCALE_BASE), args.entries})
    scale_caches = {}
    for count in sizes:
        label = "scale_small" if count == sizes[0] else "scale_large"
        t0 = time.monotonic()
        smw = new_cache(os.path.join(tmp, f"scale-{count}"))
        fill(smw, count, args.entry_bytes, label)
        sample = random.Random(count).sample(range(count), min(SCALE_SAMPLE, count))
        environs = [base_environ(scale_path(i)) for i in sample]
        for e in environs:  # check, and warm the route memo
            got: list[str] = []
            list(smw(e.copy(), lambda s, h, e=None: got.append(dict(h).get("Cache-Status"))))
            if got != ["fic; hit"]:
                raise SystemExit(f"{label}: expected a hit for {e['PATH_INFO']}, got {got}")
        scale_caches[label] = (smw, count, time.monotonic() - t0)
        runners[label] = (many_env_runner(smw, environs), len(environs))

    print(f"fic_middleware in-process benchmark: {BODY_SIZE // 1024} KB PNG body, "
          f"{repeats} interleaved rounds, ~{batch_ns / 1e6:g} ms batches "
          f"(python {platform.python_version()}, lmdb {lmdb.version()}, "
          f"{os.cpu_count()} CPUs)", flush=True)
    for label, (_smw, count, secs) in scale_caches.items():
        print(f"  {label}: {count:,} entries of {args.entry_bytes} B filled in {secs:.1f}s")
    t0 = time.monotonic()
    results = measure(runners, repeats, batch_ns)
    elapsed = time.monotonic() - t0

    def v(name: str) -> float:
        return results[name]["low3_us"]

    labels = {
        "loop": "harness only (environ copy + call)",
        "bare": "a. bare WSGI app, body from memory",
        "raw_lmdb": "b. raw lmdb txn.get app",
        "hit": "c. fic_middleware hit",
        "pt_direct": "d. trivial app, called directly",
        "pt_wrapped": "d. trivial app behind FastImageCache",
    }
    for label, (_smw, count, _secs) in scale_caches.items():
        labels[label] = f"hit, small entries, cache of {count:,}"
    print()
    print(table(results, labels))

    pt_added = v("pt_wrapped") - v("pt_direct")
    paired = [w - d for w, d in zip(results["pt_wrapped"]["samples_us"],
                                    results["pt_direct"]["samples_us"])]
    ratios: dict[str, float] = {
        "hit_over_raw_lmdb": v("hit") / v("raw_lmdb"),
        "hit_over_bare": v("hit") / v("bare"),
        "hit_net_over_raw_lmdb_net": (v("hit") - v("loop")) / (v("raw_lmdb") - v("loop")),
        "pass_through_added_us": pt_added,
        "pass_through_added_us_paired_median": statistics.median(paired),
    }
    print()
    print(f"hit / raw lmdb        {ratios['hit_over_raw_lmdb']:6.2f}x   "
          f"(target <= {TARGETS['hit_over_raw_lmdb']}: "
          f"{verdict(ratios['hit_over_raw_lmdb'] <= TARGETS['hit_over_raw_lmdb'])})")
    print(f"  minus the harness   {ratios['hit_net_over_raw_lmdb_net']:6.2f}x   "
          f"({v('hit') - v('loop'):.2f} us vs {v('raw_lmdb') - v('loop'):.2f} us)")
    print(f"hit / bare            {ratios['hit_over_bare']:6.2f}x")
    print(f"pass-through added    {pt_added:6.3f} us "
          f"(paired median {ratios['pass_through_added_us_paired_median']:.3f} us; target < "
          f"{TARGETS['pass_through_added_us']}: "
          f"{verdict(pt_added < TARGETS['pass_through_added_us'])})")
    if "scale_large" in results:
        ratios["scale_large_over_small"] = v("scale_large") / v("scale_small")
        ok = ratios["scale_large_over_small"] <= TARGETS["scale_large_over_small"]
        print(f"hit at {args.entries:,} / at {SCALE_BASE:,} entries "
              f"{ratios['scale_large_over_small']:6.2f}x   (target <= "
              f"{TARGETS['scale_large_over_small']}: {verdict(ok)})")
    else:
        print(f"hit at scale          {v('scale_small'):.3f} us at {args.entries:,} entries "
              f"(pass --entries 1000000 for the flat-with-size ratio)")
    print(f"({elapsed:.1f}s of measurement)")

    extra = None
    if args.breakdown:
        print()
        print("hit path pieces (each timed alone, same harness, no environ copy):")
        extra = breakdown(mw, HIT_PATH, repeats, batch_ns)
        print(table(extra, {name: name for name in extra}))

    if args.json:
        report = {
            "benchmark": "inprocess",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv[1:],
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "lmdb": lmdb.version(),
            "body_bytes": BODY_SIZE,
            "repeats": repeats,
            "batch_ms": batch_ns / 1e6,
            "entries": args.entries,
            "entry_bytes": args.entry_bytes,
            "figure": "low3_us: median of the three fastest batches, us per request",
            "results": results,
            "ratios": ratios,
            "targets": TARGETS,
            "breakdown": extra,
        }
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.json}")

    for smw, _count, _secs in scale_caches.values():
        smw.close()
    mw.close()
    raw_env.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
