"""Runs only inside a private network namespace (see tests/test_netns.py, which starts
``unshare -rnm`` for it): there, ``lo`` is the only interface, so no packet can leave, and
trap listeners on internal addresses record every connection that reaches them.

``/etc/hosts`` is replaced by a bind mount, in this mount namespace only, with names that
resolve to the traps.
"""

from __future__ import annotations

import os
import selectors
import socket
import subprocess
import tempfile
import threading
from collections.abc import Iterator

import pytest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from ..images import png

# Refused addresses that get a listener (ports 80, 443 and 8080 on each).
TRAP_ADDRESSES = ["127.0.0.1", "::1", "169.254.169.254", "10.1.2.3", "192.168.7.7",
                  "172.16.5.5", "100.64.1.1", "fd00::7"]
TRAP_PORTS = [80, 443, 8080]
# A "public" address, here on lo: the origin that redirects, and the positive control.
PUBLIC = "93.184.216.34"
PUBLIC_PORT = 8081
HOSTS = f"""127.0.0.1 localhost
::1 localhost
169.254.169.254 metadata.test
10.1.2.3 internal.test
fd00::7 v6internal.test
{PUBLIC} public.test
{PUBLIC} mixed.test
10.1.2.3 mixed.test
"""


def _private_namespace() -> bool:
    return [name for _, name in socket.if_nameindex()] == ["lo"]


def pytest_configure(config: pytest.Config) -> None:
    # The whole point: never run these where a wrong answer could reach a real network.
    if not _private_namespace():
        pytest.exit("tests/netns must run in a private network namespace (tests/test_netns.py)",
                    returncode=3)


def _sh(*args: str) -> None:
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture(scope="session", autouse=True)
def network() -> Iterator[None]:
    _sh("ip", "link", "set", "lo", "up")
    for address in [*TRAP_ADDRESSES, PUBLIC]:
        if address not in ("127.0.0.1", "::1"):
            _sh("ip", "addr", "add", f"{address}/{128 if ':' in address else 32}", "dev", "lo")
    with tempfile.NamedTemporaryFile("w", suffix=".hosts", delete=False) as hosts:
        hosts.write(HOSTS)
    _sh("mount", "--bind", hosts.name, "/etc/hosts")
    yield
    os.unlink(hosts.name)


class Traps:
    """Listeners on every trap address and port; ``hits`` lists who got a connection."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, int]] = []
        self.selector = selectors.DefaultSelector()
        self.sockets = []
        for address in TRAP_ADDRESSES:
            for port in TRAP_PORTS:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sock = socket.socket(family, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((address, port))
                sock.listen(16)
                self.selector.register(sock, selectors.EVENT_READ, (address, port))
                self.sockets.append(sock)
        self.running = True
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()

    def _watch(self) -> None:
        while self.running:
            for key, _ in self.selector.select(timeout=0.1):
                conn, _ = key.fileobj.accept()  # type: ignore[union-attr]
                self.hits.append(key.data)
                conn.close()

    def close(self) -> None:
        self.running = False
        self.thread.join()
        for sock in self.sockets:
            sock.close()


@pytest.fixture(scope="session")
def session_traps(network: None) -> Iterator[Traps]:
    traps = Traps()
    yield traps
    traps.close()


@pytest.fixture
def traps(session_traps: Traps) -> Iterator[Traps]:
    session_traps.hits.clear()
    yield session_traps


@Request.application  # type: ignore[arg-type]
def public_origin(request: Request) -> Response:
    """A well-behaved origin at a public address: images, and redirects to ?to=."""
    if request.path.startswith("/goto"):
        return Response(status=302, headers={"Location": request.args["to"]})
    return Response(png(request.path), content_type="image/png")


@pytest.fixture(scope="session")
def public_base(network: None) -> Iterator[str]:
    server = make_server(PUBLIC, PUBLIC_PORT, public_origin, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://public.test:{PUBLIC_PORT}"
    server.shutdown()
    server.server_close()
