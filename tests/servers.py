"""Real server processes for tests: gunicorn on a free loopback port, redis-server, and
dead origins (one that never answers, one that never accepts)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# gunicorn >= 25.1 opens a control socket at one path per user, shared by every instance.
_GUNICORN = tuple(int(p) for p in importlib.metadata.version("gunicorn").split(".")[:2])
NO_CONTROL_SOCKET = ["--no-control-socket"] if _GUNICORN >= (25, 1) else []
# Loopback only: never let an http_proxy from the environment see these requests.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, headers: dict[str, str] | None = None, method: str = "GET",
        timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) without raising on error statuses."""
    request = urllib.request.Request(url, headers=headers or {}, method=method)
    try:
        with _opener.open(request, timeout=timeout) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, dict(exc.headers), exc.read()


def wait_for(url: str, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout}s")


@contextmanager
def running(command: Sequence[str], base: str, env: dict[str, str]) -> Iterator[str]:
    """Run a server ``command`` until ``base`` answers; yield ``base``; stop it on exit."""
    # A session of its own: what the server forks (workers, a shell's child) goes with it.
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    try:
        wait_for(f"{base}/", process)
        yield base
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        with contextlib.suppress(ProcessLookupError):  # workers the master left behind
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def gunicorn(app: str, env: dict[str, str], args: Sequence[str] = ()) -> Iterator[str]:
    """Run ``gunicorn app`` on 127.0.0.1; yields the base URL; stops it on exit."""
    port = free_port()
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}",
               "--log-level", "warning", *NO_CONTROL_SOCKET, *args, app]
    with running(command, f"http://127.0.0.1:{port}", env) as base:
        yield base


class RedisServer:
    """A real redis-server on a free loopback port, without persistence."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--protected-mode", "yes"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError("redis-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def _venv_script(name: str) -> str:
    """A console script installed beside this interpreter (granian, uwsgi)."""
    return str(Path(sys.executable).parent / name)


@contextmanager
def granian(app: str | None, env: dict[str, str], workers: int = 2) -> Iterator[str]:
    """``examples/granian.sh [app]`` (granian's WSGI interface; its default app without one)
    on 127.0.0.1 with ``workers`` worker processes; yields the base URL; stops it on exit."""
    port = free_port()
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    env = {**env, "GRANIAN_PORT": str(port), "GRANIAN_WORKERS": str(workers), "PATH": path}
    command = [str(ROOT / "examples" / "granian.sh"), *([app] if app else [])]
    with running(command, f"http://127.0.0.1:{port}", env) as base:
        yield base


@contextmanager
def uwsgi(env: dict[str, str], module: str | None = None, workers: int = 2,
          ini: bool = True) -> Iterator[str]:
    """``uwsgi --ini examples/uwsgi.ini`` on 127.0.0.1 with ``workers`` processes: the ini's
    paste pipeline, or ``module`` (UWSGI_MODULE) instead; yields the base URL. ``ini=False``:
    a bare master and workers instead of the ini (uWSGI's defaults)."""
    port = free_port()
    env = {**env, "UWSGI_HTTP_SOCKET": f"127.0.0.1:{port}", "UWSGI_PROCESSES": str(workers)}
    if module is not None:
        env["UWSGI_MODULE"] = module
    options = (["--ini", str(ROOT / "examples" / "uwsgi.ini")] if ini
               else ["--master", "--enable-threads", "--die-on-term", "--need-app"])
    with running([_venv_script("uwsgi"), *options], f"http://127.0.0.1:{port}", env) as base:
        yield base

class BlackHole:
    """A dead origin on 127.0.0.1 that accepts connections and never answers (or reads)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self) -> None:
        with suppress(OSError):  # wakes the accept() (close alone would not)
            self.sock.shutdown(socket.SHUT_RDWR)
        self.sock.close()
        for conn in self.accepted:
            conn.close()


class Unaccepting:
    """A dead origin on 127.0.0.1 that never accepts: its accept queue is kept full, so the
    kernel drops further SYNs and a connect hangs until its timeout (a closed port would
    refuse at once)."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(0)
        self.port = int(self.sock.getsockname()[1])
        self.fillers: list[socket.socket] = []
        for _ in range(16):  # Linux queues backlog + 1 connections
            filler = socket.socket()
            filler.settimeout(0.2)
            self.fillers.append(filler)
            try:
                filler.connect(("127.0.0.1", self.port))
            except TimeoutError:
                return  # full: this connect hung
        raise RuntimeError("the accept queue never filled")

    def close(self) -> None:
        for filler in self.fillers:
            filler.close()
        self.sock.close()
