"""What an operator does to a cache: stats, purge, verify, gc, warm. One implementation,
used by ``{prefix}/_admin``, the ``fic`` command and the Python API
(``FastImageCache.purge_url`` and friends). The stats schema is documented in
docs/OPERATIONS.md.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from . import metrics
from .breaker import Breaker
from .config import Config
from .errors import NotFound
from .metrics import Stats
from .record import CorruptRecord, UnknownRecord, decode
from .routing import Router, with_variants
from .tiers import Tiers

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication

T = TypeVar("T")
_TOP_ORIGINS = 20


class Progress(Protocol):
    """Wraps a long iteration (the CLI shows a bar); ``total`` may be unknown."""

    def __call__(self, items: Iterable[T], total: int | None, what: str) -> Iterable[T]: ...


def _quiet(items: Iterable[T], total: int | None, what: str) -> Iterable[T]:
    return items


class Operations:
    def __init__(self, config: Config, tiers: Tiers, router: Router, stats: Stats,
                 breaker: Breaker, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.tiers = tiers
        self.router = router
        self.counters = stats
        self.breaker = breaker
        self.clock = clock

    # --- reading ---

    def stats(self) -> dict[str, Any]:
        """What the cache holds and what every worker of this host has served since the
        cache directory was made (docs/OPERATIONS.md, "Stats")."""
        totals = self.counters.totals()
        results = totals["results"]
        answered = sum(results[r] for r in ("hit", "miss", "stale", "collapsed"))
        origins = sorted(({"origin": name, "fetches": count,
                           "bytes": totals["fetched_bytes"].get(name, 0)}
                          for name, count in totals["fetches"].items()),
                         key=lambda o: (-o["fetches"], o["origin"]))
        config = self.config
        return {
            "storage": {**self.tiers.storage.stats(), "max_bytes": config.max_bytes,
                        "max_entries": config.max_entries, "eviction": config.eviction,
                        "backend": config.backend},
            "requests": results,
            "hit_ratio": round((results["hit"] + results["collapsed"]) / answered, 4) if answered else None,
            "errors": totals["errors"],
            "served_bytes": totals["served_bytes"],
            "origins": origins[:_TOP_ORIGINS],
            "origin_fetch": {"count": sum(totals["fetch_buckets"]),
                             "seconds": round(totals["fetch_seconds"], 3)},
            "corrupt_records": totals["corrupt"],
            "redis_failures": totals["redis_failures"],
            "processes": totals["processes"],
            "circuits": self.breaker.states(),  # host-wide already: not summed
        }

    def metrics(self) -> tuple[bytes, str]:
        """The Prometheus exposition and its content type."""
        return metrics.exposition(self.counters.totals(), self.tiers.storage.stats(),
                                  self.breaker.states())

    # --- purge ---

    def purge_url(self, url: str) -> int:
        """Forget the image at an absolute origin URL; entries removed.
        Raises ValueError for a URL that is not absolute http(s)."""
        return self.tiers.purge(with_variants(self.router.keys_for_url(url)))

    def purge_path(self, path: str) -> int:
        """Forget the image a client path names (``{prefix}/o/...`` or ``{prefix}/r/...``).
        Raises RequestError (BadRequest, NotFound...) for a path that names no image."""
        prefix = self.config.prefix
        if not path.startswith(prefix + "/"):
            raise NotFound("not under the prefix")
        path, _, query = path.partition("?")
        request = self.router.route(path[len(prefix):], query if self.config.forward_query else "")
        return self.tiers.purge(with_variants([request.key]))

    def purge_all(self) -> int:
        """Forget every entry, here and in the shared tier; how many this host had."""
        return self.tiers.clear()

    # --- maintenance ---

    def verify(self, fix: bool = False, progress: Progress = _quiet) -> dict[str, int]:
        """Check every record of this host; with ``fix``, delete the damaged ones.
        ``{"ok", "corrupt", "other_version", "deleted"}``."""
        counts = {"ok": 0, "corrupt": 0, "other_version": 0}
        damaged = []
        for storage, key, record in progress(self.tiers.scan(), self.tiers.entries(), "verify"):
            try:
                decode(record, key, self.tiers.sealer)
                counts["ok"] += 1
            except UnknownRecord:
                counts["other_version"] += 1
            except CorruptRecord:
                counts["corrupt"] += 1
                damaged.append((storage, key))
        if fix:
            for storage, key in damaged:  # the damage is this host's: the Redis copy stays
                storage.delete(key)
        return {**counts, "deleted": len(damaged) if fix else 0}

    def gc(self, progress: Progress = _quiet) -> dict[str, Any]:
        """Remove the entries that can no longer be served, even stale (each record says
        until when: ``stale_until``, ``error_until``), and the unreadable ones, from every
        tier; fold the counters of exited workers into one file."""
        now = self.clock()
        expired, damaged = [], []
        for _, key, record in progress(self.tiers.scan(), self.tiers.entries(), "gc"):
            try:
                entry = decode(record, key, self.tiers.sealer)
            except CorruptRecord:  # another version included: unreadable by this release
                damaged.append(key)
                continue
            if max(entry.stale_until, entry.error_until) < now:  # not even servable stale
                expired.append(key)
        self.tiers.purge(expired + damaged)
        self.counters.totals()
        return {"removed_expired": len(expired), "removed_unreadable": len(damaged),
                "storage": self.tiers.storage.stats()}

    def warm(self, lines: Iterable[str], app: WSGIApplication,
             progress: Progress = _quiet) -> dict[str, Any]:
        """GET each line (an absolute URL, or a path under the prefix) through ``app`` (the
        middleware) so the cache holds it before the first client asks.
        ``{"statuses": {status: count}, "failed": [...]}``."""
        from .urlbuilder import UrlBuilder

        build = UrlBuilder(self.config)
        todo = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
        statuses: dict[str, int] = {}
        failed: list[dict[str, str]] = []
        for line in progress(todo, len(todo), "warm"):
            try:
                path = line if line.startswith(self.config.prefix + "/") else build(line)
            except ValueError as exc:
                # UrlBuilder speaks as the templates' fic_url(); here the line is the subject.
                failed.append({"line": line, "error": str(exc).removeprefix("fic_url: ")})
                continue
            status, reason = _get(app, path)
            statuses[status] = statuses.get(status, 0) + 1
            if not status.startswith("2"):
                failed.append({"line": line, "error": f"{status} {reason}"})
        return {"statuses": statuses, "failed": failed}


def _get(app: WSGIApplication, path: str) -> tuple[str, str]:
    """The status of a GET of ``path`` (percent-encoded, as a client sends it), and for an
    error the reason the middleware gave in its plain-text body."""
    from werkzeug.test import create_environ, run_wsgi_app

    path, _, query = path.partition("?")
    body, status, _headers = run_wsgi_app(app, create_environ(path, query_string=query))
    data = b"".join(body)
    reason = data.decode("utf-8", "replace").strip()[:200] if not status.startswith("2") else ""
    return status[:3], reason or status[4:]
