"""A scriptable socket-level origin, images of a chosen size, and the one check every
scenario ends with (:func:`assert_sane`)."""

from __future__ import annotations

import collections
import hashlib
import socket
import struct
import subprocess
import sys
import threading
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from werkzeug.datastructures import Headers
from werkzeug.test import create_environ, run_wsgi_app

from fic_middleware.record import decode

from ..images import png
from ..servers import ROOT

# A step of a scripted answer: bytes are sent, a float is a pause (seconds), RST aborts the
# connection with a TCP reset (SO_LINGER 0). After the last step the connection is closed (FIN).
RST = object()
Step = object
Script = Sequence[Step]

# What the contract allows instead of the image when an origin misbehaves (section 3).
CLEAR_ERRORS = frozenset({404, 429, 502, 503, 504})


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def sized_png(name: str, size: int) -> bytes:
    """A valid PNG of exactly ``size`` bytes (>= 100), its content drawn from ``name``: the
    small image of :func:`tests.images.png` plus a private ancillary chunk of filler."""
    base = png(name)
    pad = size - len(base) - 12
    assert pad >= 0, "too small"
    filler = hashlib.shake_256(name.encode()).digest(pad)
    return base[:-12] + _chunk(b"fiLl", filler) + base[-12:]  # the IEND chunk is 12 bytes


def head(length: int | None, *extra: str, content_type: str = "image/png",
         status: str = "200 OK") -> bytes:
    """A response head (``Connection: close``); ``length`` None leaves Content-Length out."""
    lines = [f"HTTP/1.1 {status}", f"Content-Type: {content_type}", "Connection: close", *extra]
    if length is not None:
        lines.append(f"Content-Length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def whole(body: bytes, *extra: str) -> Script:
    """The well-behaved answer: the image, its length, a clean close."""
    return (head(len(body), *extra) + body,)


class FaultOrigin:
    """An origin on 127.0.0.1 that answers each path with a script of raw steps, one thread
    per connection (so a held connection blocks nobody). ``behave(path, *steps)`` scripts one
    path; ``route(prefix, fn)`` scripts every path under ``prefix`` with ``fn(rest)``."""

    def __init__(self) -> None:
        self.scripts: dict[str, Script] = {}
        self.on_connect: Script | None = None  # played at once, without reading a request
        self.routes: list[tuple[str, Callable[[str], Script]]] = []
        self.hits: collections.Counter[str] = collections.Counter()
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.sock.settimeout(0.1)
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def behave(self, path: str, *steps: Step) -> None:
        self.scripts[path] = steps

    def route(self, prefix: str, script: Callable[[str], Script]) -> None:
        self.routes.append((prefix, script))

    def _script(self, path: str) -> Script:
        if path in self.scripts:
            return self.scripts[path]
        for prefix, script in self.routes:
            if path.startswith(prefix):
                return script(path[len(prefix):])
        return (head(0, status="404 Not Found", content_type="text/plain"),)

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self.lock:
                self.threads = [t for t in self.threads if t.is_alive()]
                self.threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            if self.on_connect is not None:
                self._play(conn, self.on_connect)
                return
            request = b""
            try:
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        return
                    request += chunk
            except OSError:
                return
            parts = request.split(b" ", 2)
            path = parts[1].decode("latin-1") if len(parts) == 3 else ""
            with self.lock:
                self.hits[path] += 1
            self._play(conn, self._script(path))

    def _play(self, conn: socket.socket, script: Script) -> None:
        for step in script:
            if step is RST:
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                return
            if isinstance(step, float | int):
                if self.stopping.wait(step):
                    return
                continue
            assert isinstance(step, bytes)
            try:
                conn.sendall(step)
            except OSError:
                return  # the client hung up first (a timeout test, a killed worker)

    def close(self) -> None:
        self.stopping.set()
        self.acceptor.join(2)
        self.sock.close()
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(2)


@pytest.fixture
def fault_origin() -> Iterator[FaultOrigin]:
    origin = FaultOrigin()
    yield origin
    origin.close()


class Answer(NamedTuple):
    status: int
    headers: Headers
    body: bytes


def call(app: Any, path: str, headers: dict[str, str] | None = None) -> Answer:
    """GET ``path`` through a WSGI app in this process (thread-safe, no webtest lint)."""
    environ = create_environ(path, headers=headers)
    body, status, response_headers = run_wsgi_app(app, environ, buffered=True)
    return Answer(int(status[:3]), response_headers, b"".join(body))


def assert_sane(answer: Answer, expected: bytes) -> None:
    """The origin's exact bytes, or a short plain-text error status from the contract."""
    if answer.status == 200:
        assert answer.body == expected, "served bytes differ from the origin's"
        assert answer.headers["Content-Length"] == str(len(expected))
        assert answer.headers["Content-Type"] == "image/png"
    else:
        assert answer.status in CLEAR_ERRORS, (answer.status, answer.body)
        assert answer.headers["Content-Type"] == "text/plain; charset=utf-8"
        assert b"\n" not in answer.body.rstrip(b"\n") and len(answer.body) < 200


def stored_bodies(mw: Any) -> dict[bytes, bytes]:
    """key -> body of every record the middleware's storage holds; each must decode."""
    return {key: decode(record, key).body for key, record in mw.storage.scan()}


def run_verify(cache_dir: str | Path) -> subprocess.CompletedProcess[str]:
    """``python -m fic_middleware verify`` in its own process, as an operator runs it."""
    return subprocess.run([sys.executable, "-m", "fic_middleware", "verify", "--cache-dir",
                           str(cache_dir)], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           check=False)
