"""Shared fixtures: a real HTTP origin on 127.0.0.1 whose path picks its behaviour, and
middleware factories over real LMDB directories."""

from __future__ import annotations

import collections
import gzip
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trustme
import webtest
from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from fic_middleware import FastImageCache
from fic_middleware.assembly import build
from fic_middleware.config import Config

from .images import gif, jpeg, png
from .servers import RedisServer

# tests/netns runs only inside the private network namespace that tests/test_netns.py makes.
collect_ignore = [] if os.environ.get("NETNS_SUITE") == "1" else ["netns"]

# The origin's per-request access log is noise in test output.
logging.getLogger("werkzeug").setLevel(logging.ERROR)

LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"
SVG = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>'



class Clock:
    """A clock the test moves (``clock.now += 61``), for the parts that take one."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


class Origin:
    """A threaded werkzeug server; ``hits[path]`` counts requests, ``seen`` keeps them."""

    def __init__(self, ssl_context: ssl.SSLContext | None = None) -> None:
        self.hits: collections.Counter[str] = collections.Counter()
        self.seen: list[Request] = []
        self.lock = threading.Lock()
        self.server = make_server("127.0.0.1", 0, self.app, threaded=True, ssl_context=ssl_context)
        self.port = self.server.server_port
        scheme = "https" if ssl_context else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def reset(self) -> None:
        with self.lock:
            self.hits.clear()
            self.seen.clear()

    @Request.application  # type: ignore[arg-type]
    def app(self, request: Request) -> Response:
        with self.lock:
            self.hits[request.path] += 1
            self.seen.append(request)
        kind, _, rest = request.path[1:].partition("/")
        handler = getattr(self, f"do_{kind.replace('-', '_')}", None)
        if handler is None:
            return Response("no such behaviour", status=404)
        response: Response = handler(request, rest)
        return response

    # --- behaviours, one per first path segment ---

    def do_img(self, request: Request, rest: str) -> Response:
        """A PNG named by the path; Cache-Control from ?cc=, conditional GET honoured."""
        body = png(rest)
        response = Response(body, content_type="image/png")
        response.headers["Last-Modified"] = LAST_MODIFIED
        response.headers["Cache-Control"] = request.args.get("cc", "max-age=3600")
        if "expires" in request.args:
            response.headers["Expires"] = request.args["expires"]
        response.set_etag(f"origin-{len(body)}")
        return response.make_conditional(request)

    def do_jpeg(self, request: Request, rest: str) -> Response:
        return Response(jpeg(), content_type="image/jpeg")

    def do_gif_as_png(self, request: Request, rest: str) -> Response:
        return Response(gif(), content_type="image/png")

    def do_html(self, request: Request, rest: str) -> Response:
        return Response("<html>not an image</html>", content_type="text/html")

    def do_html_as_png(self, request: Request, rest: str) -> Response:
        return Response("<html>not an image</html>", content_type="image/png")

    def do_html_as_svg(self, request: Request, rest: str) -> Response:
        return Response("<html><script>alert(1)</script></html>", content_type="image/svg+xml")

    def do_status(self, request: Request, rest: str) -> Response:
        return Response("origin error body: secret-detail", status=int(rest.split("/")[0]))

    def do_big(self, request: Request, rest: str) -> Response:
        return Response(png("big") + b"\0" * int(rest), content_type="image/png")

    def do_chunked(self, request: Request, rest: str) -> Response:
        """No Content-Length: werkzeug sends it chunked."""
        size = int(rest)

        def body() -> Iterator[bytes]:
            yield png("chunked")
            for _ in range(size // 65536 + 1):
                yield b"\0" * 65536
        return Response(body(), content_type="image/png", direct_passthrough=True)

    def do_gzip(self, request: Request, rest: str) -> Response:
        response = Response(gzip.compress(png(rest)), content_type="image/png")
        response.headers["Content-Encoding"] = "gzip"
        return response

    def do_brotli(self, request: Request, rest: str) -> Response:
        response = Response(png(rest), content_type="image/png")
        response.headers["Content-Encoding"] = "br"
        return response

    def do_slow(self, request: Request, rest: str) -> Response:
        time.sleep(float(rest.split("/")[0]))
        return Response(png(rest), content_type="image/png")

    def do_drip(self, request: Request, rest: str) -> Response:
        """Sends a byte every 0.2 s, forever-ish: only total_timeout stops it."""
        def body() -> Iterator[bytes]:
            yield png("drip")
            for _ in range(100):
                time.sleep(0.2)
                yield b"\0"
        return Response(body(), content_type="image/png", direct_passthrough=True)

    def do_redirect(self, request: Request, rest: str) -> Response:
        """/redirect/N/name: N more hops, then the image /img/name."""
        hops, _, name = rest.partition("/")
        target = f"/img/{name}" if int(hops) <= 1 else f"/redirect/{int(hops) - 1}/{name}"
        return Response(status=302, headers={"Location": target})

    def do_goto(self, request: Request, rest: str) -> Response:
        return Response(status=302, headers={"Location": request.args["to"]})

    def do_svg(self, request: Request, rest: str) -> Response:
        return Response(SVG, content_type="image/svg+xml")

    def do_gzip_bomb(self, request: Request, rest: str) -> Response:
        """40 KiB on the wire, 40 MiB once decoded."""
        response = Response(gzip.compress(png("bomb") + b"\0" * (40 << 20)), content_type="image/png")
        response.headers["Content-Encoding"] = "gzip"
        return response

    def do_headers(self, request: Request, rest: str) -> Response:
        """A PNG with the response headers of ``?h=Name: value`` (repeatable) and ``?cc=``."""
        response = Response(png(rest), content_type="image/png")
        response.headers["Cache-Control"] = request.args.get("cc", "max-age=3600")
        for line in request.args.getlist("h"):
            name, _, value = line.partition(":")
            response.headers.add(name.strip(), value.strip())
        return response

    def do_negotiate(self, request: Request, rest: str) -> Response:
        """A PNG naming the Accept it was asked with (``{rest}|{Accept}``), with ``Vary:
        {?vary=}`` (default ``Accept``) as an origin that picks AVIF or WebP would send."""
        response = Response(png(f"{rest}|{request.headers.get('Accept', '')}"),
                            content_type="image/png")
        response.headers["Cache-Control"] = "max-age=3600"
        response.headers["Vary"] = request.args.get("vary", "Accept")
        return response

    def do_private(self, request: Request, rest: str) -> Response:
        response = Response(png(rest), content_type="image/png")
        response.headers["Cache-Control"] = "private, max-age=60"
        response.headers["Set-Cookie"] = "session=secret"
        return response


class RawOrigin:
    """A socket-level origin on 127.0.0.1 for what a well-behaved server won't send:
    ``responses[path]`` is the exact bytes to write (then the connection is closed)."""

    def __init__(self) -> None:
        self.responses: dict[str, bytes] = {}
        self.requests: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.base = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                path = request.split(b" ", 2)[1].decode() if request.count(b" ") >= 2 else ""
                self.requests.append(path)
                try:
                    conn.sendall(self.responses.get(path, b"HTTP/1.1 404 Not Found\r\n"
                                                         b"Content-Length: 0\r\n\r\n"))
                except OSError:
                    pass  # the client hung up first: that is what some tests want

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw_origin() -> Iterator[RawOrigin]:
    origin = RawOrigin()
    yield origin
    origin.close()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A redis-server of this test's own (tests stop and start it)."""
    server = RedisServer()
    yield server
    server.stop()


REDIS_KEY = "test-redis-key"


@pytest.fixture
def hosts(make_mw: Any, tmp_path: Any, redis_server: RedisServer) -> Any:
    """Middlewares standing for separate hosts: own cache dirs, one Redis."""
    def make(name: str, **options: Any) -> FastImageCache:
        mw: FastImageCache = make_mw(cache_dir=str(tmp_path / name), redis_url=redis_server.url,
                                     redis_key=REDIS_KEY, **options)
        return mw
    return make


@pytest.fixture(scope="session")
def origin_server() -> Iterator[Origin]:
    origin = Origin()
    yield origin
    origin.server.shutdown()
    origin.server.server_close()


@pytest.fixture(scope="session")
def tls_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def tls_origin_server(tls_ca: trustme.CA) -> Iterator[Origin]:
    """The same origin over HTTPS, with a certificate for 127.0.0.1 from a test CA."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls_ca.issue_cert("127.0.0.1", "localhost").configure_cert(context)
    origin = Origin(context)
    yield origin
    origin.server.shutdown()
    origin.server.server_close()


@pytest.fixture
def tls_origin(tls_origin_server: Origin) -> Origin:
    tls_origin_server.reset()
    return tls_origin_server


@pytest.fixture
def origin(origin_server: Origin) -> Origin:
    origin_server.reset()
    return origin_server


def downstream(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    """The wrapped app: answers everything with 'app'."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"app"]


@pytest.fixture
def make_mw(tmp_path: Any, origin: Origin) -> Iterator[Callable[..., FastImageCache]]:
    """Build middlewares over a per-test LMDB directory and the test origin."""
    made: list[FastImageCache] = []

    def make(app: Any = downstream, clock: Callable[[], float] | None = None,
             **options: Any) -> FastImageCache:
        """``clock``: the cache's time (seconds since the epoch), for tests that move it."""
        options.setdefault("cache_dir", str(tmp_path / "cache"))
        options.setdefault("origins", {"t": origin.base})
        options.setdefault("allowed_networks", ["127.0.0.1/32"])
        options.setdefault("connect_timeout", "2s")
        options.setdefault("retries", 0)
        if clock is None:
            mw = FastImageCache(app, **options)
        else:
            mw = FastImageCache.assembled(app, build(Config.load(**options), clock))
        made.append(mw)
        return mw

    yield make
    for mw in made:
        mw.close()


@pytest.fixture
def client(make_mw: Callable[..., FastImageCache]) -> webtest.TestApp:
    return webtest.TestApp(make_mw())
