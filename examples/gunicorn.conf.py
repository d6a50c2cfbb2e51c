"""A sample gunicorn configuration for an app wrapped in fic_middleware.

    FIC_CACHE_DIR=var/demo-cache FIC_ORIGINS=demo=http://127.0.0.1:8001/images \\
    FIC_ALLOWED_NETWORKS=127.0.0.1/32 \\
    gunicorn -c examples/gunicorn.conf.py examples.flask_app.app:app

The middleware reads its own options from ``FIC_*`` variables (or keyword arguments, or a
config file); this file only sets gunicorn's. Command-line flags beat it (``-b``, ``-w``...).
Tune through the environment without editing it:

    WEB_CONCURRENCY=4          workers (default: from the CPU count, below)
    GUNICORN_WORKER_CLASS=gthread GUNICORN_THREADS=4
    GUNICORN_PRELOAD=1         import the app once in the master, then fork
    GUNICORN_BIND=0.0.0.0:8000 (default 127.0.0.1:8000: put a proxy in front)
"""

import multiprocessing
import os

# --- where to listen ------------------------------------------------------------------------
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Connections waiting to be accepted (gunicorn's default).
backlog = 2048

# --- workers --------------------------------------------------------------------------------
# A hit is a few microseconds of Python around one LMDB read: it is CPU-bound, and the
# server's own per-request work (parsing, environ, writing) costs far more than the middleware.
# So about one worker per core for hits, plus some for requests waiting on an origin: a miss
# holds its worker (a sync worker: the whole process) for up to total_timeout.
# benchmarks/http_bench.py measures sync and gthread on your machine.
workers = int(os.environ.get("WEB_CONCURRENCY", multiprocessing.cpu_count() * 2 + 1))

# "sync": one request at a time per worker; simplest, fastest per hit, no keep-alive (put
#         nginx or another proxy in front, it keeps the client connections).
# "gthread": a thread pool per worker; a slow origin fetch blocks one thread, not the worker,
#         and client keep-alive works. Choose it when misses are frequent or origins slow.
# Both work with the middleware: it is thread-safe, and all workers (and threads) of the
# host share the one LMDB cache.
worker_class = os.environ.get("GUNICORN_WORKER_CLASS", "sync")
if worker_class == "gthread":
    threads = int(os.environ.get("GUNICORN_THREADS", "4"))
    keepalive = 5  # seconds an idle client connection stays open (gthread only)

# --- preload --------------------------------------------------------------------------------
# Allowed: FastImageCache(...) only reads and checks its configuration when the app is
# imported. The LMDB environment, the urllib3 pool and the stats writer are opened lazily,
# in each worker, on its first image request, so nothing opened in the master is shared
# across fork. Preloading saves memory (shared pages) and reports configuration errors
# (a bad FIC_* value) once, before any worker starts.
preload_app = os.environ.get("GUNICORN_PRELOAD", "") not in ("", "0", "false", "no")

# --- timeouts: consistent with the middleware's ---------------------------------------------
# A miss may take, at worst: waiting for another request's fetch of the same image
# (lock_timeout, 10 s by default, at most twice: in the process, then on the host) and then a
# fetch of its own, cut at total_timeout (20 s by default, retries included). 10 + 10 + 20 =
# 40 s. gunicorn kills a worker that has been silent for longer than `timeout`, so keep it
# above that; raise it if you raise FIC_TOTAL_TIMEOUT or FIC_LOCK_TIMEOUT.
timeout = 60
# On reload/stop (SIGHUP, SIGTERM), workers finish the requests they have: give an in-flight
# fetch its total_timeout, plus a little.
graceful_timeout = 25

# --- nothing to do after fork ---------------------------------------------------------------
# No post_fork hook is needed. The middleware opens its LMDB environment, its connection pool
# and its stats thread lazily in each worker (it notices the fork), never in the master, so
# --preload, worker restarts (max_requests) and any number of workers are safe as they are.
# Only add a hook for your own app's resources that are opened at import time:
#
# def post_fork(server, worker):
#     my_app.db.dispose()   # e.g. a SQLAlchemy engine created at import time

# Recycling workers is not needed for the middleware (its memory stays flat); set it if your
# app leaks. Jitter spreads the restarts.
# max_requests = 100000
# max_requests_jitter = 1000

# gunicorn >= 25.1 listens on a control socket at one path per user (~/.gunicorn/); with
# several gunicorn instances under one user, disable it (older versions ignore this name).
# control_socket_disable = True

# --- behind a proxy -------------------------------------------------------------------------
# gunicorn's forwarded_allow_ips only affects wsgi.url_scheme and REMOTE_ADDR handling in
# gunicorn. The middleware decides whose X-Forwarded-For to believe (for miss_rate) from its
# own FIC_TRUSTED_PROXIES.
# forwarded_allow_ips = "127.0.0.1"

# --- logs -----------------------------------------------------------------------------------
# No access log unless GUNICORN_ACCESSLOG is set ("-" = stderr): it adds to the cost of every
# request, and the proxy in front usually logs already.
accesslog = os.environ.get("GUNICORN_ACCESSLOG") or None
errorlog = "-"
loglevel = "info"
