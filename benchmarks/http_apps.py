"""The WSGI apps that ``benchmarks/http_bench.py`` runs under gunicorn (stdlib, lmdb, whitenoise).

Loaded by gunicorn as ``benchmarks.http_apps:<name>`` from the repository root (``benchmarks``
is a namespace package there). Everything comes from environment variables that
``benchmarks/http_bench.py`` sets:

- ``BENCH_PNG``         path of the PNG every variant serves;
- ``BENCH_LMDB``        directory of an LMDB env holding the PNG under ``BENCH_LMDB_KEY``;
- ``BENCH_STATIC``      directory whitenoise serves (holds ``bench.png``);
- ``BENCH_STATIC_PREFIX`` URL prefix whitenoise serves it under;
- ``FIC_*``             the middleware's configuration (``fic`` only).
- ``BENCH_APP``         the app this server serves: ``fic`` and ``whitenoise`` are built at
                        import then (uWSGI finds an app in the module dict only).

Apps:

- ``bare``      the PNG from memory (read once at import), any path;
- ``bare_headers`` the same, with the nine headers of a fic_middleware hit;
- ``origin``    the same, with the validators and freshness of a real origin; the local origin
                behind the ``fic`` and nginx variants (answers any path);
- ``raw_lmdb``  ``with env.begin() as txn: body = txn.get(key)`` per request, the env opened
                lazily in each worker (so ``--preload`` is safe);
- ``whitenoise`` WhiteNoise serving ``BENCH_STATIC``;
- ``fic``       ``FastImageCache`` from ``FIC_*``, in front of an app answering 404.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from email.utils import formatdate
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]

_BODY = b""
if os.environ.get("BENCH_PNG"):
    with open(os.environ["BENCH_PNG"], "rb") as _f:
        _BODY = _f.read()
_LENGTH = str(len(_BODY))
_LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)


def not_found(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]


def bare(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", _LENGTH)])
    return [_BODY]


# What a fic_middleware hit sends (same names, values of the same length), from memory: tells
# the cost of the headers in the server from the cost of the middleware's code.
_HIT_HEADERS = [("Content-Type", "image/png"), ("Content-Length", _LENGTH),
                ("ETag", '"' + "0" * 16 + '"'),
                ("Cache-Control", "public, max-age=86400"), ("Age", "12"),
                ("Cache-Status", "fic; hit"), ("X-Content-Type-Options", "nosniff"),
                ("Last-Modified", formatdate(1_700_000_000, usegmt=True))]


def bare_headers(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(_HIT_HEADERS))
    return [_BODY]


_ORIGIN_HEADERS = [("Content-Type", "image/png"), ("Content-Length", _LENGTH),
                   ("Cache-Control", "public, max-age=86400"),
                   ("Last-Modified", _LAST_MODIFIED)]


def origin(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    start_response("200 OK", list(_ORIGIN_HEADERS))
    return [] if environ["REQUEST_METHOD"] == "HEAD" else [_BODY]


# --- raw LMDB: one env per worker, opened on the first request of that worker -------------

_lmdb_env: Any = None
_lmdb_pid = 0
_LMDB_KEY = os.environ.get("BENCH_LMDB_KEY", "bench.png").encode()


def _open_lmdb() -> Any:
    global _lmdb_env, _lmdb_pid
    import lmdb

    _lmdb_env = lmdb.open(os.environ["BENCH_LMDB"], readonly=True, lock=True,
                          max_readers=256, map_size=64 * 1024 * 1024)
    _lmdb_pid = os.getpid()
    return _lmdb_env


def raw_lmdb(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
    env = _lmdb_env if _lmdb_pid == os.getpid() else _open_lmdb()
    with env.begin() as txn:
        body = txn.get(_LMDB_KEY)
    start_response("200 OK", [("Content-Type", "image/png"), ("Content-Length", str(len(body)))])
    return [body]


# --- whitenoise, fic: built only when gunicorn loads them ---------------------------------

def __getattr__(name: str) -> Any:
    if name == "whitenoise":
        from whitenoise import WhiteNoise

        app = WhiteNoise(not_found, root=os.environ["BENCH_STATIC"],
                         prefix=os.environ.get("BENCH_STATIC_PREFIX", "/"))
        globals()[name] = app
        return app
    if name == "fic":
        from fic_middleware import FastImageCache

        app = FastImageCache(not_found)
        globals()[name] = app
        return app
    raise AttributeError(name)


# uWSGI looks its callable up in the module's dict, without __getattr__: the server's app,
# named by BENCH_APP, is built at import instead.
if os.environ.get("BENCH_APP") in ("whitenoise", "fic"):
    __getattr__(os.environ["BENCH_APP"])
