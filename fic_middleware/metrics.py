"""Counters for every worker process of a host, summed when read.

Each process counts in memory (an attribute increment on the hit path) and a daemon thread
writes its totals to ``{cache_dir}/stats/{pid}.json`` once a second. Reading sums every
file: live workers' and, folded into ``retired.json``, those of workers that exited, so
totals never go backwards when gunicorn replaces a worker. Without a cache directory (the
memory backend) a process reports only itself.

The Prometheus exposition is rendered by ``prometheus_client`` (extra ``admin``).
"""

from __future__ import annotations

import bisect
import contextlib
import fcntl
import itertools
import json
import logging
import os
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from . import forks

log = logging.getLogger("fic_middleware")

RESULTS = ("hit", "miss", "stale", "collapsed", "error")
# Seconds; an origin fetch is cut at total_timeout (20 s by default).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 60.0)
_FLUSH_EVERY = 1.0
_RETIRED = "retired.json"
_COUNTS_FILE = re.compile(r"(\d+)\.\d+\.json")
_instances = itertools.count()


class Stats:
    """This process's counters. The hot ones are plain attributes (cheap to bump)."""

    def __init__(self, directory: str | None) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._instance = next(_instances)
        self.running = False  # the flusher of this process
        self._stopped = threading.Event()
        self._pid = os.getpid()
        self._reset()
        forks.register(self)

    def _reset(self) -> None:
        self.hit = 0
        self.served_bytes = 0
        self.results = dict.fromkeys(RESULTS, 0)
        self.errors: dict[str, int] = {}
        self.fetches: dict[str, int] = {}
        self.fetched_bytes: dict[str, int] = {}
        self.fetch_buckets = [0] * (len(BUCKETS) + 1)
        self.fetch_seconds = 0.0
        self.corrupt = 0
        self.redis_failures = 0

    def after_fork(self) -> None:
        # The parent's counts are the parent's: a worker starts from zero, with its own file.
        self._pid = os.getpid()
        self.running = False
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._reset()

    def start(self) -> None:
        """Start this process's flusher (idempotent; callers check ``running`` first)."""
        forks.check()  # the first request of a worker forked without Python's at-fork hooks
        with self._lock:
            if self.running:
                return
            self.running = True
            self._stopped.clear()
            if self.directory is not None:
                threading.Thread(target=self._flush_forever, name="fic-stats", daemon=True).start()

    def redis_failed(self) -> None:
        self.redis_failures += 1

    def result(self, name: str) -> None:
        self.results[name] += 1

    def error(self, status: int) -> None:
        key = str(status)
        self.errors[key] = self.errors.get(key, 0) + 1
        self.results["error"] += 1

    def fetched(self, origin: str, seconds: float, size: int) -> None:
        with self._lock:
            self.fetches[origin] = self.fetches.get(origin, 0) + 1
            self.fetched_bytes[origin] = self.fetched_bytes.get(origin, 0) + size
            self.fetch_buckets[bisect.bisect_left(BUCKETS, seconds)] += 1
            self.fetch_seconds += seconds

    def snapshot(self) -> dict[str, Any]:
        results = dict(self.results)
        results["hit"] += self.hit
        return {"results": results, "errors": dict(self.errors),
                "served_bytes": self.served_bytes, "fetches": dict(self.fetches),
                "fetched_bytes": dict(self.fetched_bytes),
                "fetch_buckets": list(self.fetch_buckets), "fetch_seconds": self.fetch_seconds,
                "corrupt": self.corrupt, "redis_failures": self.redis_failures}

    # --- files ---

    def _flush_forever(self) -> None:
        pid = os.getpid()
        stopped = self._stopped
        last: dict[str, Any] | None = None
        while self._pid == pid and not stopped.is_set():
            snapshot = self.snapshot()
            if snapshot != last:
                try:
                    self.flush(snapshot)
                    last = snapshot
                except OSError as exc:
                    log.warning("could not write stats: %s", exc)
            stopped.wait(_FLUSH_EVERY)

    def stop(self) -> None:
        """Stop the flusher, writing the counts one last time."""
        self._stopped.set()
        if self.running and self.directory is not None and self._pid == os.getpid():
            try:
                self.flush()
            except OSError as exc:
                log.warning("could not write stats: %s", exc)
        self.running = False

    def flush(self, snapshot: dict[str, Any] | None = None) -> None:
        if self.directory is None:
            return
        os.makedirs(self.directory, exist_ok=True)
        # pid.instance: two middlewares of one process (tests, two apps) keep their own.
        path = os.path.join(self.directory, f"{self._pid}.{self._instance}.json")
        with self._flush_lock:
            _write(path, snapshot or self.snapshot())

    def totals(self) -> dict[str, Any]:
        """Counters of every process of the host (this one up to date), and how many live."""
        if self.directory is None:
            return {**self.snapshot(), "processes": 1}
        self.flush()
        with _locked(self.directory):
            retired = _read(os.path.join(self.directory, _RETIRED)) or _empty()
            live = []
            for name in os.listdir(self.directory):
                match = _COUNTS_FILE.fullmatch(name)
                if match is None:
                    continue
                path = os.path.join(self.directory, name)
                counts = _read(path)
                if counts is None:
                    continue
                if _alive(int(match.group(1))):
                    live.append(counts)
                else:  # a worker that exited: its counts stay, in the retired file
                    retired = _add(retired, counts)
                    _write(os.path.join(self.directory, _RETIRED), retired)
                    os.unlink(path)
        total = retired
        for counts in live:
            total = _add(total, counts)
        return {**total, "processes": len(live)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _locked(directory: str) -> Iterator[None]:
    fd = os.open(os.path.join(directory, ".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _read(path: str) -> dict[str, Any] | None:
    try:
        with open(path) as fh:
            data: dict[str, Any] = json.load(fh)
            return data
    except (OSError, ValueError):
        return None


def _write(path: str, data: Mapping[str, Any]) -> None:
    """Atomically: readers see the old file or the new one, never half of one."""
    temporary = f"{path}.{threading.get_ident()}.tmp"
    with open(temporary, "w") as fh:
        json.dump(data, fh)
    os.replace(temporary, path)


def _empty() -> dict[str, Any]:
    return Stats(None).snapshot()


def _add(a: Mapping[str, Any], b: Mapping[str, Any]) -> dict[str, Any]:
    """Sum two snapshots, key by key (numbers, lists of numbers, dicts of numbers)."""
    total: dict[str, Any] = {}
    for key in set(a) | set(b):
        x, y = a.get(key), b.get(key)
        if x is None or y is None:
            total[key] = x if y is None else y
        elif isinstance(x, dict):
            total[key] = {k: x.get(k, 0) + y.get(k, 0) for k in set(x) | set(y)}
        elif isinstance(x, list):
            total[key] = [i + j for i, j in zip(x, y)]
        else:
            total[key] = x + y
    return total


def exposition(totals: Mapping[str, Any], storage: Mapping[str, int],
               circuits: Sequence[Mapping[str, Any]] = ()) -> tuple[bytes, str]:
    """Prometheus text (body, content type) for summed ``totals``, the storage's counts and
    the origins' circuits (:meth:`fic_middleware.breaker.Breaker.states`, host-wide)."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.core import (
        CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily,
    )
    from prometheus_client.exposition import CONTENT_TYPE_LATEST

    class Collector:
        def collect(self) -> Iterator[Any]:
            requests = CounterMetricFamily("fic_requests", "Requests under the prefix, by result.",
                                           labels=["result"])
            for result, count in sorted(totals["results"].items()):
                requests.add_metric([result], count)
            yield requests
            errors = CounterMetricFamily("fic_errors", "Error answers, by status.", labels=["status"])
            for status, count in sorted(totals["errors"].items()):
                errors.add_metric([status], count)
            yield errors
            yield CounterMetricFamily("fic_served_bytes", "Image bytes sent to clients.",
                                      value=totals["served_bytes"])
            fetches = CounterMetricFamily("fic_origin_fetches", "Origin fetches, by origin.",
                                          labels=["origin"])
            fetched = CounterMetricFamily("fic_origin_fetched_bytes", "Bytes fetched, by origin.",
                                          labels=["origin"])
            for origin in sorted(totals["fetches"]):
                fetches.add_metric([origin], totals["fetches"][origin])
                fetched.add_metric([origin], totals["fetched_bytes"].get(origin, 0))
            yield fetches
            yield fetched
            cumulative, buckets = 0, []
            for bound, count in zip([*map(str, BUCKETS), "+Inf"], totals["fetch_buckets"]):
                cumulative += count
                buckets.append((bound, cumulative))
            yield HistogramMetricFamily("fic_origin_fetch_seconds", "Origin fetch duration.",
                                        buckets=buckets, sum_value=totals["fetch_seconds"])
            yield CounterMetricFamily("fic_evictions", "Entries evicted to stay in budget.",
                                      value=storage["evictions"])
            yield GaugeMetricFamily("fic_entries", "Entries stored.", value=storage["entries"])
            yield GaugeMetricFamily("fic_stored_bytes", "Bytes stored.", value=storage["bytes"])
            yield CounterMetricFamily("fic_corrupt_records", "Damaged records found and dropped.",
                                      value=totals["corrupt"])
            yield CounterMetricFamily("fic_redis_failures", "Failed calls to the Redis tier.",
                                      value=totals["redis_failures"])
            yield GaugeMetricFamily("fic_processes", "Worker processes reporting.",
                                    value=totals["processes"])
            circuit_open = GaugeMetricFamily(
                "fic_origin_circuit_open", "1 while misses for this origin fail fast.",
                labels=["origin"])
            trips = CounterMetricFamily("fic_origin_circuit_trips",
                                        "Times this origin's circuit opened.", labels=["origin"])
            for circuit in circuits:
                circuit_open.add_metric([circuit["origin"]], int(circuit["state"] != "closed"))
                trips.add_metric([circuit["origin"]], circuit["trips"])
            yield circuit_open
            yield trips

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector())
    return generate_latest(registry), CONTENT_TYPE_LATEST
