#!/usr/bin/env python3
"""HTTP-level benchmark of fic_middleware under gunicorn, granian and uWSGI, with wrk
(goals: docs/PERFORMANCE.md).

Every variant serves the same ~50 KB PNG (deterministic noise, so it does not compress), each
from its own server on its own 127.0.0.1 port:

- ``bare``        a WSGI app returning the bytes from memory;
- ``bare_headers`` the same with the nine headers a hit sends (tells the server's per-header
                  cost from the middleware's);
- ``raw_lmdb``    a WSGI app doing one ``txn.get`` per request (env opened lazily per worker);
- ``whitenoise``  WhiteNoise serving the file from a directory;
- ``fic_hit``     FastImageCache, entry warmed once before measuring;
- ``fic_miss``    FastImageCache, every request a new path (wrk Lua script), fetched from the
                  local origin and stored;
- ``nginx``       nginx ``proxy_cache`` in front of the same local origin (hits): the native
                  reference.

The WSGI variants run under each server (``--servers``), every one with 2 worker processes:
``sync`` (gunicorn sync), ``gthread`` (gunicorn gthread, 4 threads each), ``granian``
(``granian --interface wsgi``) and ``uwsgi`` (uWSGI from the pyuwsgi wheel, master + processes,
``--http11-socket``: keep-alive, as wrk and granian use). The local origin is gunicorn (gthread)
answering any path with the PNG.

wrk runs with fixed threads/connections/duration; the variants are measured in rounds, in a
fresh shuffled order each round, and the figure of a variant is the median over the rounds of
req/s (and of wrk's p50/p99 latency). Ratios are to the bare app under the same server.
Each run also reads the CPU time (user + system, /proc) of the server's processes before and
after: ``CPU us/req`` is the server's own cost per request, which varies less than req/s on a
shared machine (req/s also depends on how much CPU the neighbours leave).

Run from the repository root: ``benchmarks/run http [--quick] [-d 2] [-c 32] [-t 2]
[--servers sync,gthread,granian,uwsgi]``.
Installs wrk and nginx with apt-get if they are missing (nginx is never started as the
system service: it runs with its own prefix and config on a free loopback port). Everything
it starts is stopped on exit, on Ctrl-C and on errors.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime as _dt
import importlib.metadata
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = sys.executable
_GUNICORN = tuple(int(p) for p in importlib.metadata.version("gunicorn").split(".")[:2])
# gunicorn >= 25.1 opens a control socket at one path per user, shared by every instance.
NO_CONTROL_SOCKET = ["--no-control-socket"] if _GUNICORN >= (25, 1) else []
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only

PATH = "/_fic/o/o/bench.png"          # the URL path of the image, the same for every variant
MISS_PREFIX = "/_fic/o/o/miss/"       # + a unique name per request (fic_miss)
ORIGIN_BASE = "/img"                  # the origin's base path: FIC_ORIGINS="o=http://.../img"
LMDB_KEY = "bench.png"

# fic hit / bare under every server; fic hit / whitenoise under gunicorn sync.
TARGETS = {"fic_hit_over_bare": 0.95, "fic_hit_over_whitenoise_sync": 1.0}
SERVERS = {
    "sync": "gunicorn sync",
    "gthread": "gunicorn gthread",
    "granian": "granian (WSGI)",
    "uwsgi": "uWSGI (pyuwsgi)",
}

MISS_LUA = r"""
-- Every request a new path: <prefix><run>-<thread>-<n>.png (run: an argument after --).
prefix = "%s"
run = "x"
tid = 0
n = 0
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  if args[1] then run = args[1] end
end
function request()
  n = n + 1
  return wrk.format("GET", prefix .. run .. "-" .. tid .. "-" .. n .. ".png")
end
""" % MISS_PREFIX


# --- the image ----------------------------------------------------------------------------

def make_png(width: int = 128, height: int = 133, seed: int = 50) -> bytes:
    """A valid 8-bit RGB PNG of random pixels (~50 KB: noise does not compress)."""
    rng = random.Random(seed)
    raw = b"".join(b"\x00" + rng.randbytes(width * 3) for _ in range(height))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9))
            + chunk(b"IEND", b""))


# --- processes ----------------------------------------------------------------------------

class Stop(Exception):
    """Raised by SIGTERM/SIGHUP/SIGALRM handlers so that the cleanup runs."""


def _on_signal(signum: int, frame: Any) -> None:
    raise Stop(f"stopped by {signal.Signals(signum).name}")


try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)
except OSError:  # pragma: no cover
    _libc = None


def _child_setup() -> None:
    # Runs in the child between fork and exec: die with us even if we are SIGKILLed.
    if _libc is not None:
        _libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class Processes:
    """Servers started in their own session (process group); all stopped by stop_all()."""

    def __init__(self, logdir: str) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes], signal.Signals]] = []

    def start(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None,
              stop_signal: signal.Signals = signal.SIGTERM) -> subprocess.Popen[bytes]:
        log = open(os.path.join(self.logdir, f"{name}.log"), "ab")
        try:
            proc = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                    stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True, preexec_fn=_child_setup)
        finally:
            log.close()
        self.procs.append((name, proc, stop_signal))
        return proc

    def log_tail(self, name: str, lines: int = 15) -> str:
        try:
            with open(os.path.join(self.logdir, f"{name}.log"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""

    def stop_all(self, timeout: float = 10.0) -> None:
        for _name, proc, sig in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(sig)
        deadline = time.monotonic() + timeout
        for _name, proc, _sig in reversed(self.procs):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            # the whole group: workers left behind by a master that did not stop in time
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.wait(timeout=5)
        self.procs.clear()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_get(url: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def wait_ready(url: str, proc: subprocess.Popen[bytes], name: str, procs: Processes,
               timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{procs.log_tail(name)}")
        try:
            http_get(url, timeout=2)
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{name} did not answer {url} within {timeout:g}s:\n"
                       f"{procs.log_tail(name)}")


# --- tools: wrk and nginx (Debian packages) -----------------------------------------------

def find_binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for d in ("/usr/sbin", "/usr/local/sbin", "/sbin", "/usr/bin"):
        path = os.path.join(d, name)
        if os.access(path, os.X_OK):
            return path
    return None


def apt_install(package: str, timeout: float = 600) -> None:
    """apt-get install PACKAGE (idempotent; apt-get update once if the first try fails).

    No service is started: while installing, a policy-rc.d answering 101 is put in place if
    the system has none (Debian's mechanism), so a package like nginx does not start its
    system service."""
    if not shutil.which("apt-get"):
        raise RuntimeError(f"{package} is missing and there is no apt-get to install it")
    sudo: list[str] = []
    if os.geteuid() != 0:
        if not shutil.which("sudo"):
            raise RuntimeError(f"{package} is missing: install it (apt-get install {package})")
        sudo = ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    policy = "/usr/sbin/policy-rc.d"
    created = False
    if os.geteuid() == 0 and not os.path.exists(policy):
        with open(policy, "w") as f:
            f.write("#!/bin/sh\n# temporary, benchmarks/http_bench.py: start no service\nexit 101\n")
        os.chmod(policy, 0o755)
        created = True
    install = [*sudo, "apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    try:
        print(f"installing {package} (apt-get)...", file=sys.stderr, flush=True)
        if subprocess.run(install, env=env, stdout=subprocess.DEVNULL,
                          timeout=timeout).returncode != 0:
            subprocess.run([*sudo, "apt-get", "update", "-q"], env=env, stdout=subprocess.DEVNULL,
                           timeout=timeout, check=True)
            subprocess.run(install, env=env, stdout=subprocess.DEVNULL, timeout=timeout,
                           check=True)
    finally:
        if created:
            os.unlink(policy)


def ensure_binary(name: str, package: str) -> str:
    path = find_binary(name)
    if path is None:
        apt_install(package)
        path = find_binary(name)
        if path is None:
            raise RuntimeError(f"{package} installed but no {name} binary found")
    return path


def dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def tool_version(argv: Sequence[str], pattern: str) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    m = re.search(pattern, out.stdout + out.stderr)
    return m.group(1) if m else "?"


# --- wrk ----------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def _bytes(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(B|KB|MB|GB|TB)", text)
    if not m:
        return float("nan")
    return float(m.group(1)) * 1024.0 ** ["B", "KB", "MB", "GB", "TB"].index(m.group(2))


@dataclass
class Sample:
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int          # socket errors (connect/read/write/timeout) + non-2xx/3xx answers
    bytes_per_request: float
    cpu_us: float = float("nan")  # CPU time of the server's processes per request


def parse_wrk(out: str) -> Sample:
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    total = re.search(r"(\d+) requests in [\d.]+\w+, ([\d.]+\w+) read", out)
    if not (rps and p50 and p99 and total):
        raise RuntimeError(f"could not parse wrk's output:\n{out}")
    errors = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        errors += sum(int(g) for g in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    requests = int(total.group(1))
    return Sample(float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), requests, errors,
                  _bytes(total.group(2)) / max(1, requests))


_TICK_US = 1e6 / os.sysconf("SC_CLK_TCK")


def group_cpu_us(pgid: int) -> float:
    """CPU time of the live processes of a process group, in us (Linux): the run time of every
    thread from /proc/PID/task/TID/schedstat (ns), or utime + stime (ticks) without it."""
    total = 0.0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if int(fields[2]) != pgid:  # pgrp
                continue
            try:
                ns = 0
                for tid in os.listdir(f"/proc/{pid}/task"):
                    with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                        ns += int(f.read().split()[0])
                total += ns / 1000
            except (OSError, ValueError, IndexError):
                total += (int(fields[11]) + int(fields[12])) * _TICK_US  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total


def run_wrk(wrk: str, url: str, args: argparse.Namespace, duration: float,
            script: str | None = None, script_args: Sequence[str] = (),
            pgid: int = 0) -> Sample:
    argv = [wrk, "-t", str(args.threads), "-c", str(args.connections), "-d", f"{duration:g}s",
            "--latency", "--timeout", "10s"]
    if script:
        argv += ["-s", script]
    argv.append(url)
    if script_args:
        argv += ["--", *script_args]
    cpu0 = group_cpu_us(pgid) if pgid else 0.0
    out = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60,
                         preexec_fn=_child_setup)
    cpu1 = group_cpu_us(pgid) if pgid else 0.0
    if out.returncode != 0:
        raise RuntimeError(f"wrk failed ({out.returncode}): {out.stderr or out.stdout}")
    sample = parse_wrk(out.stdout)
    if pgid and sample.requests:
        sample.cpu_us = (cpu1 - cpu0) / sample.requests
    return sample


# --- the variants -------------------------------------------------------------------------

@dataclass
class Variant:
    key: str             # e.g. fic_hit/sync
    kind: str            # bare, raw_lmdb, whitenoise, fic_hit, fic_miss, nginx
    server: str          # a key of SERVERS, or nginx
    label: str
    url: str = ""
    script: str | None = None
    samples: list[Sample] = field(default_factory=list)
    skipped: str = ""
    pgid: int = 0        # the server's process group (master and workers)

    @property
    def server_label(self) -> str:
        return SERVERS.get(self.server, self.server)

    def median(self, attr: str) -> float:
        return float(statistics.median(float(getattr(s, attr)) for s in self.samples))


KINDS = {
    "bare": "a. bare WSGI app, bytes from memory",
    "bare_headers": "a'. bare app + a hit's 8 headers",
    "raw_lmdb": "b. raw LMDB app, txn.get per request",
    "whitenoise": "c. whitenoise, file from a directory",
    "fic_hit": "d. fic_middleware hit",
    "fic_miss": "e. fic_middleware miss (new URL each)",
    "nginx": "f. nginx proxy_cache hit (native)",
}


def venv_script(name: str) -> str:
    """A console script of this interpreter's environment (granian, uwsgi), else from PATH."""
    path = os.path.join(os.path.dirname(PYTHON), name)
    return path if os.access(path, os.X_OK) else (shutil.which(name) or name)


def gunicorn_argv(app: str, port: int, worker: str, args: argparse.Namespace) -> list[str]:
    argv = [PYTHON, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
            "--workers", str(args.workers), "--log-level", "warning",
            "--timeout", "30", "--graceful-timeout", "3", *NO_CONTROL_SOCKET]
    if worker == "gthread":
        argv += ["--worker-class", "gthread", "--threads", str(args.gthreads)]
    else:
        argv += ["--worker-class", "sync"]
    return [*argv, app]


def server_argv(app: str, port: int, server: str, args: argparse.Namespace) -> list[str]:
    """The command line of ``server`` serving ``app`` (module:name) on 127.0.0.1:port."""
    if server == "granian":
        # Defaults otherwise (1 blocking thread per worker for WSGI); no access log.
        return [venv_script("granian"), "--interface", "wsgi", "--host", "127.0.0.1",
                "--port", str(port), "--workers", str(args.workers), "--no-ws",
                "--log-level", "warning", app]
    if server == "uwsgi":
        # As examples/uwsgi.ini (master + processes, the app imported once in the master
        # before the fork, Python told of the fork), but --http11-socket: keep-alive, as wrk
        # and granian use (every app here sends Content-Length, which it needs).
        return [venv_script("uwsgi"), "--http11-socket", f"127.0.0.1:{port}", "--master",
                "--processes", str(args.workers), "--module", app, "--enable-threads",
                "--py-call-osafterfork", "--need-app", "--die-on-term", "--disable-logging",
                "--strict",
                # Without it, a wsgi.file_wrapper answer (whitenoise) waits on delayed ACKs
                # over a kept-alive connection: ~40 ms each.
                "--tcp-nodelay"]
    return gunicorn_argv(app, port, server, args)


NGINX_CONF = """\
# benchmarks/http_bench.py: a private nginx, its own prefix, loopback only.
{user}worker_processes {workers};
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;
    proxy_cache_path {prefix}/cache levels=1:2 keys_zone=fic:10m max_size=1g inactive=1d
                     use_temp_path=off;
    upstream origin {{
        server 127.0.0.1:{origin_port};
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location /_fic/o/o/ {{
            proxy_pass http://origin{origin_base}/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache fic;
            proxy_cache_valid 200 1d;
            proxy_cache_lock on;
            add_header X-Cache-Status $upstream_cache_status;
        }}
    }}
}}
"""


def start_nginx(procs: Processes, nginx: str, tmp: str, origin_port: int, workers: int) -> str:
    prefix = os.path.join(tmp, "nginx")
    for sub in ("tmp", "cache", "logs"):
        os.makedirs(os.path.join(prefix, sub), exist_ok=True)
    # As root, the workers run as this user (nginx would use nobody, who can't read tmp).
    user = ""
    if os.geteuid() == 0:
        import grp
        import pwd
        user = f"user {pwd.getpwuid(0).pw_name} {grp.getgrgid(0).gr_name};\n"
    port = free_port()
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(user=user, workers=workers, prefix=prefix, port=port,
                                  origin_port=origin_port, origin_base=ORIGIN_BASE))
    check = subprocess.run([nginx, "-t", "-q", "-p", prefix, "-e", f"{prefix}/error.log",
                            "-c", conf], capture_output=True, text=True, timeout=30)
    if check.returncode != 0:
        raise RuntimeError(f"nginx -t failed: {check.stderr}")
    # SIGQUIT: graceful shutdown of the master and its workers.
    procs.start("nginx", [nginx, "-p", prefix, "-e", f"{prefix}/error.log", "-c", conf,
                          "-g", "daemon off;"], stop_signal=signal.SIGQUIT)
    return f"http://127.0.0.1:{port}"


def check_image(name: str, url: str, body: bytes, expect_cache: tuple[str, str] | None) -> str:
    status, headers, got = http_get(url)
    if status != 200 or got != body:
        raise RuntimeError(f"{name}: {url} answered {status} with {len(got)} bytes "
                           f"(expected the {len(body)}-byte PNG); headers {headers}")
    if expect_cache:
        header, want = expect_cache
        # granian sends header names in lower case
        value = next((v for k, v in headers.items() if k.lower() == header.lower()), "")
        if want not in value:
            raise RuntimeError(f"{name}: {url}: {header} is {value!r}, expected {want!r}")
        return value
    return ""


# --- the run ------------------------------------------------------------------------------

def setup_servers(procs: Processes, tmp: str, body: bytes, args: argparse.Namespace,
                  nginx: str | None) -> list[Variant]:
    png = os.path.join(tmp, "bench.png")
    with open(png, "wb") as f:
        f.write(body)
    static = os.path.join(tmp, "static")
    os.makedirs(static)
    shutil.copy(png, os.path.join(static, "bench.png"))
    import lmdb
    lmdb_dir = os.path.join(tmp, "lmdb")
    lmdb_env = lmdb.open(lmdb_dir, map_size=64 * 1024 * 1024)
    with lmdb_env.begin(write=True) as txn:
        txn.put(LMDB_KEY.encode(), body)
    lmdb_env.close()

    base_env = {k: v for k, v in os.environ.items() if not k.startswith("FIC_")}
    base_env.update({"BENCH_PNG": png, "BENCH_LMDB": lmdb_dir, "BENCH_LMDB_KEY": LMDB_KEY,
                     "BENCH_STATIC": static, "BENCH_STATIC_PREFIX": PATH.rsplit("/", 1)[0] + "/",
                     "PYTHONDONTWRITEBYTECODE": "1"})

    # The origin: any path -> the PNG (gthread: keep-alive for the middleware's pool).
    origin_port = free_port()
    oargs = argparse.Namespace(**{**vars(args), "workers": 2, "gthreads": 4})
    origin = procs.start("origin", gunicorn_argv("benchmarks.http_apps:origin", origin_port,
                                                 "gthread", oargs), env=base_env)
    origin_url = f"http://127.0.0.1:{origin_port}{ORIGIN_BASE}"
    wait_ready(f"{origin_url}/ready.png", origin, "origin", procs)

    variants: list[Variant] = []
    started: list[tuple[Variant, subprocess.Popen[bytes]]] = []
    lua = os.path.join(tmp, "miss.lua")
    with open(lua, "w") as f:
        f.write(MISS_LUA)
    for server in args.servers:
        for kind in args.variants:
            if kind == "nginx":
                continue
            name = f"{kind}-{server}"
            port = free_port()
            env = dict(base_env)
            app = {"fic_hit": "fic", "fic_miss": "fic"}.get(kind, kind)
            env["BENCH_APP"] = app
            if app == "fic":
                env.update({"FIC_CACHE_DIR": os.path.join(tmp, f"cache-{name}"),
                            "FIC_ORIGINS": f"o={origin_url}",
                            "FIC_ALLOWED_NETWORKS": "127.0.0.1/32"})
                if kind == "fic_miss":  # steady state: evicting as it stores
                    env["FIC_MAX_BYTES"] = args.miss_max_bytes
            proc = procs.start(name, server_argv(f"benchmarks.http_apps:{app}", port, server,
                                                 args), env=env)
            v = Variant(f"{kind}/{server}", kind, server, KINDS[kind],
                        url=f"http://127.0.0.1:{port}{PATH}",
                        script=lua if kind == "fic_miss" else None, pgid=proc.pid)
            variants.append(v)
            started.append((v, proc))
    if "nginx" in args.variants:
        v = Variant("nginx", "nginx", "nginx", KINDS["nginx"])
        if nginx is None:
            v.skipped = "nginx not available"
        else:
            base = start_nginx(procs, nginx, tmp, origin_port, args.workers)
            v.url = base + PATH
            v.pgid = procs.procs[-1][1].pid
            started.append((v, procs.procs[-1][1]))
        variants.append(v)

    for v, proc in started:
        name = "nginx" if v.kind == "nginx" else v.key.replace("/", "-")
        wait_ready(v.url, proc, name, procs)
        # Correct bytes, and the cache state each variant is meant to measure.
        if v.kind == "fic_hit":
            check_image(v.key, v.url, body, ("Cache-Status", "fic;"))
            check_image(v.key, v.url, body, ("Cache-Status", "fic; hit"))
        elif v.kind == "fic_miss":
            for i in range(2):
                check_image(v.key, f"{v.url.rsplit('/', 1)[0]}/miss/check-{i}.png", body,
                            ("Cache-Status", "fic; fwd=miss; stored"))
        elif v.kind == "nginx":
            check_image(v.key, v.url, body, None)
            check_image(v.key, v.url, body, ("X-Cache-Status", "HIT"))
        else:
            check_image(v.key, v.url, body, None)
    return variants


def measure(wrk: str, variants: list[Variant], args: argparse.Namespace) -> None:
    live = [v for v in variants if not v.skipped]
    run_id = f"{os.getpid()}{int(time.time()) % 100000}"
    # Warm-up, not counted: every worker has imported, opened LMDB, filled its memos.
    for v in live if args.warmup else ():
        run_wrk(wrk, v.url, args, args.warmup, v.script, [f"w{run_id}"] if v.script else ())
    rng = random.Random(args.seed)
    for r in range(args.rounds):
        order = list(live)
        rng.shuffle(order)
        print(f"round {r + 1}/{args.rounds}: ", end="", file=sys.stderr, flush=True)
        for v in order:
            time.sleep(args.pause)
            s = run_wrk(wrk, v.url, args, args.duration, v.script,
                        [f"r{r}x{run_id}"] if v.script else (), v.pgid)
            v.samples.append(s)
            print(f"{v.key} {s.rps:.0f}  ", end="", file=sys.stderr, flush=True)
        print(file=sys.stderr, flush=True)


def ratio(variants: list[Variant], num: str, den: str, attr: str = "rps") -> float | None:
    """Median of num / median of den (attr: rps or cpu_us)."""
    by_key = {v.key: v for v in variants if v.samples}
    if num in by_key and den in by_key:
        return by_key[num].median(attr) / by_key[den].median(attr)
    return None


def paired_ratio(variants: list[Variant], num: str, den: str) -> float | None:
    """Median over the rounds of num's req/s / den's req/s in the same round."""
    by_key = {v.key: v for v in variants if v.samples}
    if num in by_key and den in by_key:
        return statistics.median(a.rps / b.rps for a, b in zip(by_key[num].samples,
                                                                by_key[den].samples))
    return None


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def table(head: Sequence[str], rows: list[tuple[str, ...]], align: str) -> tuple[str, list[str]]:
    """(aligned text, Markdown lines) of one table; align: one of < or > per column."""
    widths = [max(len(r[i]) for r in [tuple(head), *rows]) for i in range(len(head))]
    text = "\n".join("  ".join(f"{c:{a}{w}}" for c, a, w in zip(r, align, widths)).rstrip()
                     for r in [tuple(head), *rows])
    md = ["| " + " | ".join(head) + " |",
          "|" + "|".join("---" if a == "<" else "---:" for a in align) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    return text, md


def report(variants: list[Variant], args: argparse.Namespace, body_len: int,
           facts: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    """(text tables, Markdown tables, JSON-able results)."""
    bare = {v.server: v for v in variants if v.kind == "bare" and v.samples}
    rows: list[tuple[str, ...]] = []
    results: dict[str, Any] = {}
    for v in variants:
        if v.skipped or not v.samples:
            rows.append((v.label, v.server_label, "-", "-", "-", "-", "-", "-", "-",
                         v.skipped or "no samples"))
            continue
        rps, cpu = v.median("rps"), v.median("cpu_us")
        ref = bare.get(v.server) or bare.get("sync")
        rel = f"{rps / ref.median('rps'):.2f}x" if ref else "-"
        cpu_rel = f"{cpu / ref.median('cpu_us'):.2f}x" if ref else "-"
        errors = sum(s.errors for s in v.samples)
        per_round = " ".join(f"{s.rps:.0f}" for s in v.samples)
        rows.append((v.label, v.server_label, f"{rps:,.0f}", rel, f"{v.median('p50_ms'):.2f}",
                     f"{v.median('p99_ms'):.2f}", f"{cpu:.0f}", cpu_rel, str(errors), per_round))
        results[v.key] = {"kind": v.kind, "server": v.server, "label": v.label,
                          "rps_median": rps, "p50_ms_median": v.median("p50_ms"),
                          "p99_ms_median": v.median("p99_ms"), "cpu_us_median": cpu,
                          "errors": errors, "samples": [vars(s) for s in v.samples]}
    head = ("variant", "server", "req/s", "vs bare", "p50 ms", "p99 ms", "CPU us/req",
            "CPU vs bare", "errors", "req/s per round")
    text, md = table(head, rows, "<<>>>>>>><")

    # One line per server: req/s of each variant and the ratios of a hit.
    by_key = {v.key: v for v in variants if v.samples}
    t_bare = TARGETS["fic_hit_over_bare"]
    srows: list[tuple[str, ...]] = []
    for server in args.servers:
        cells = [f"{by_key[f'{k}/{server}'].median('rps'):,.0f}" if f"{k}/{server}" in by_key
                 else "-" for k in ("bare", "bare_headers", "raw_lmdb", "whitenoise", "fic_hit",
                                    "fic_miss")]
        hb = ratio(variants, f"fic_hit/{server}", f"bare/{server}")
        hp = paired_ratio(variants, f"fic_hit/{server}", f"bare/{server}")
        hc = ratio(variants, f"fic_hit/{server}", f"bare/{server}", "cpu_us")
        hh = ratio(variants, f"fic_hit/{server}", f"bare_headers/{server}")
        srows.append((SERVERS[server], *cells, *(f"{x:.2f}" if x is not None else "-"
                                                 for x in (hb, hp, hh, hc)),
                      verdict(hb >= t_bare) if hb is not None else "-"))
    shead = ("server", "bare", "bare + hdrs", "raw lmdb", "whitenoise", "fic hit", "fic miss",
             "hit / bare", "paired", "hit / bare + hdrs", "CPU hit / bare", f">= {t_bare}")
    stext, smd = table(shead, srows, "<>>>>>>>>>><")
    text = ("req/s per server (medians) and fic hit / bare (req/s; paired: median of the "
            "per-round ratios; CPU: server CPU per request)\n" + stext + "\n\n" + text)
    md = ["Per server: median req/s of each variant, then the hit's ratios (`paired`: the median",
          "of the per-round ratios; `CPU`: server CPU time per request, lower is better).", "",
          *smd, "", "Every variant:", "", *md]

    ratios: dict[str, float | None] = {}
    lines = []

    def line(name: str, value: float | None, text: str, suffix: str = "") -> None:
        ratios[name] = value
        if value is not None:
            lines.append(f"{text:<58} {value:6.3f}x{suffix}")

    for server in args.servers:
        w = f"({SERVERS[server]})"
        hb = ratio(variants, f"fic_hit/{server}", f"bare/{server}")
        hw = ratio(variants, f"fic_hit/{server}", f"whitenoise/{server}")
        line(f"fic_hit_over_bare_{server}", hb, f"fic hit / bare, req/s {w}",
             f"   target >= {t_bare}: {verdict(hb >= t_bare)}" if hb is not None else "")
        line(f"fic_hit_over_bare_paired_{server}",
             paired_ratio(variants, f"fic_hit/{server}", f"bare/{server}"),
             f"  same, median of per-round ratios {w}")
        line(f"fic_hit_over_bare_cpu_{server}",
             ratio(variants, f"fic_hit/{server}", f"bare/{server}", "cpu_us"),
             f"  server CPU per request, hit / bare {w}")
        line(f"bare_headers_over_bare_{server}",
             ratio(variants, f"bare_headers/{server}", f"bare/{server}"),
             f"bare + 8 headers / bare, req/s {w}")
        line(f"fic_hit_over_bare_headers_{server}",
             ratio(variants, f"fic_hit/{server}", f"bare_headers/{server}"),
             f"fic hit / bare + 8 headers, req/s {w}")
        line(f"fic_hit_over_raw_lmdb_{server}",
             ratio(variants, f"fic_hit/{server}", f"raw_lmdb/{server}"),
             f"fic hit / raw lmdb, req/s {w}")
        line(f"fic_hit_over_whitenoise_{server}", hw, f"fic hit / whitenoise, req/s {w}",
             f"   target > 1: {verdict(hw > 1)}" if server == "sync" and hw is not None else "")
        line(f"fic_miss_over_fic_hit_{server}",
             ratio(variants, f"fic_miss/{server}", f"fic_hit/{server}"),
             f"fic miss / fic hit, req/s {w}")
    line("nginx_over_fic_hit_sync", ratio(variants, "nginx", "fic_hit/sync"),
         "nginx / fic hit, req/s (gunicorn sync)")
    text += "\n\n" + "\n".join(lines)
    md.append("")
    md += ["```", *lines, "```"]
    data = {"benchmark": "http", **facts, "body_bytes": body_len,
            "wrk_args": {"threads": args.threads, "connections": args.connections,
                         "duration_s": args.duration, "warmup_s": args.warmup},
            "rounds": args.rounds, "workers": args.workers, "gthreads": args.gthreads,
            "servers": {s: SERVERS[s] for s in args.servers},
            "figure": "median over rounds of wrk's Requests/sec and latency percentiles; "
                      "CPU us/req: user+system time of the server's processes / requests",
            "results": results, "ratios": ratios, "targets": TARGETS}
    return text, "\n".join(md), data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="short run: 3 rounds of 1 s per variant")
    parser.add_argument("-t", "--threads", type=int, default=2, help="wrk threads (2)")
    parser.add_argument("-c", "--connections", type=int, default=32, help="wrk connections (32)")
    parser.add_argument("-d", "--duration", type=int, help="seconds per wrk run (2; quick 1)")
    parser.add_argument("--rounds", type=int, help="interleaved rounds (7; quick 3)")
    parser.add_argument("--warmup", type=int, default=1,
                        help="seconds of unmeasured wrk per variant before the rounds (1)")
    parser.add_argument("--pause", type=float, default=0.3, help="seconds between runs (0.3)")
    parser.add_argument("--workers", type=int, default=2,
                        help="worker processes of every server (2)")
    parser.add_argument("--gthreads", type=int, default=4, help="threads per gthread worker (4)")
    parser.add_argument("--servers", "--worker-classes", dest="servers",
                        default=",".join(SERVERS),
                        help=f"comma-separated subset of {','.join(SERVERS)}")
    parser.add_argument("--variants", default=",".join(KINDS),
                        help=f"comma-separated subset of {','.join(KINDS)}")
    parser.add_argument("--miss-max-bytes", default="256MiB",
                        help="FIC_MAX_BYTES of the miss servers (256MiB: evicts as it stores)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the round order")
    parser.add_argument("--max-time", type=float,
                        help="abort (and clean up) after this many seconds (default: 3x the "
                             "planned time + 5 min)")
    parser.add_argument("--json", metavar="FILE", help="write the numbers as JSON")
    parser.add_argument("--markdown", metavar="FILE", help="write the table as Markdown")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    args.duration = args.duration or (1 if args.quick else 2)
    args.rounds = args.rounds or (3 if args.quick else 7)
    if args.duration < 1 or args.warmup < 0 or args.rounds < 1:
        parser.error("wrk takes whole seconds: -d >= 1, --warmup >= 0, --rounds >= 1")
    args.servers = [w for w in args.servers.split(",") if w]
    args.variants = [k for k in args.variants.split(",") if k]
    for w in args.servers:
        if w not in SERVERS:
            parser.error(f"unknown server {w!r}")
    for k in args.variants:
        if k not in KINDS:
            parser.error(f"unknown variant {k!r}")
    if "bare" not in args.variants:
        args.variants.insert(0, "bare")  # the reference of every ratio
    n_runs = (len(args.servers) * len([k for k in args.variants if k != "nginx"])
              + ("nginx" in args.variants))
    planned = n_runs * (args.rounds * (args.duration + args.pause + 0.2) + args.warmup + 0.5)
    max_time = args.max_time or 3 * planned + 300

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGALRM):
        signal.signal(sig, _on_signal)
    signal.alarm(int(max_time) + 1)

    tmp = tempfile.mkdtemp(prefix="fic-bench-http-")
    procs = Processes(tmp)
    try:
        wrk = ensure_binary("wrk", "wrk")
        nginx: str | None = None
        if "nginx" in args.variants:
            try:
                nginx = ensure_binary("nginx", "nginx")
            except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
                print(f"nginx variant skipped: {exc}", file=sys.stderr)
        import lmdb
        facts = {
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "argv": sys.argv[1:] if argv is None else list(argv),
            "python": platform.python_version(),
            "lmdb": ".".join(map(str, lmdb.version())),
            "py-lmdb": importlib.metadata.version("lmdb"),
            "gunicorn": importlib.metadata.version("gunicorn"),
            "granian": dist_version("granian"),
            "pyuwsgi": dist_version("pyuwsgi"),
            "whitenoise": importlib.metadata.version("whitenoise"),
            "wrk": tool_version([wrk, "-v"], r"wrk (\S+)"),
            "nginx": tool_version([nginx, "-v"], r"nginx/(\S+)") if nginx else None,
            "cpus": os.cpu_count(),
            "loadavg_start": loadavg(),
        }
        body = make_png()
        print(f"fic_middleware HTTP benchmark: {len(body):,}-byte PNG, wrk -t{args.threads} "
              f"-c{args.connections} -d{args.duration:g}s, {args.rounds} interleaved rounds "
              f"(median), {args.workers} workers per server "
              f"({', '.join(SERVERS[x] for x in args.servers)}; gthread: x{args.gthreads} "
              f"threads), {os.cpu_count()} CPUs; "
              f"about {planned:.0f}s", flush=True)
        t0 = time.monotonic()
        variants = setup_servers(procs, tmp, body, args, nginx)
        measure(wrk, variants, args)
        facts["loadavg_end"] = loadavg()
        text, md, data = report(variants, args, len(body), facts)
        data["seconds"] = round(time.monotonic() - t0, 1)
        print()
        print(text)
        print(f"({data['seconds']:.0f}s; client and servers share the {os.cpu_count()} CPUs; "
              f"load average {facts['loadavg_start']} before, {facts['loadavg_end']} after)")
        if args.markdown:
            with open(args.markdown, "w") as f:
                f.write(md + "\n")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(data, f, indent=2)
                f.write("\n")
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted; stopping the servers", file=sys.stderr)
        return 130
    except Stop as exc:
        print(f"\n{exc}; stopping the servers", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        # A second Ctrl-C during the cleanup must not leave servers behind.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            procs.stop_all()
        finally:
            signal.signal(signal.SIGINT, signal.default_int_handler)
        if args.keep:
            print(f"kept {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
