#!/usr/bin/env bash
# Serve a WSGI app wrapped in fic_middleware with granian's WSGI interface. From the project
# root, with the sample origin running (python examples/origin.py --port 8001):
#
#   FIC_CACHE_DIR=var/demo-cache FIC_ORIGINS=demo=http://127.0.0.1:8001/images \
#   FIC_ALLOWED_NETWORKS=127.0.0.1/32 examples/granian.sh          # the Flask example
#
#   examples/granian.sh myproject.wsgi:application [GRANIAN OPTIONS]   # your own app
#
# That is, in one line:
#
#   granian --interface wsgi --host 127.0.0.1 --port 8000 --workers "$(nproc)" \
#       --backpressure 32 examples.flask_app.app:app
#
# The middleware reads its options from FIC_* variables (or keyword arguments, or a config
# file); granian reads its own from GRANIAN_* variables or flags: GRANIAN_HOST (default here
# 127.0.0.1: put a proxy in front), GRANIAN_PORT (8000), GRANIAN_WORKERS (one per core),
# GRANIAN_BACKPRESSURE (32).
#
# Workers: a hit is CPU-bound, so one worker process per core. granian runs WSGI calls on a
# pool of threads in each worker, so a request waiting on a slow origin holds a thread, not
# the worker. --backpressure caps the requests a worker takes at once (and the pool at half
# of that): granian's default, 1024 / workers, means hundreds of threads per worker. All workers share the one LMDB cache directory, and the
# middleware opens its LMDB environment, connection pool and stats writer lazily in each
# worker process: nothing to do after the fork. benchmarks/run http measures granian beside
# gunicorn and uWSGI (docs/PERFORMANCE.md).
set -euo pipefail
app=${1:-examples.flask_app.app:app}
[ $# -gt 0 ] && shift
exec granian --interface wsgi --host "${GRANIAN_HOST:-127.0.0.1}" \
    --port "${GRANIAN_PORT:-8000}" --workers "${GRANIAN_WORKERS:-$(nproc)}" \
    --backpressure "${GRANIAN_BACKPRESSURE:-32}" "$@" "$app"
