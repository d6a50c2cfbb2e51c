"""The two small HTTP proxies of the conformance adapter, on 127.0.0.1 only.

``shim``  sits between fic_middleware and the suite's origin server. The suite's bodies are
          text (a UUID, or a test's ``response_body``) and fic_middleware stores images only,
          so the shim answers every 200 to a GET with a valid 1x1 PNG whose private ancillary
          chunk ``ctBd`` carries the original body and Content-Type. It sets
          ``Content-Type: image/png`` and a new Content-Length; every other header (repeated
          ones too), the status and every non-200 answer pass unchanged.
          It also sends the suite's origin the ``Req-Num`` request header (the client's number
          of the request that made the cache fetch, which the front noted; the cache sends
          no client header to an origin), so the suite's bookkeeping numbers requests as the
          client does.
``front`` is what the suite's client talks to. ``/config/...`` and ``/state/...`` (the
          suite's own bookkeeping: PUT a test's plan, GET what the origin saw) go straight to
          the suite's server; every other path ``P`` goes to fic_middleware as
          ``{prefix}/o/{origin}P``, with the client's method, headers and query. On the way
          back, a PNG carrying a ``ctBd`` chunk is unwrapped: the client gets the original
          body and Content-Type again, taken from the bytes the cache served (so a wrong or
          stale body still shows as one). Nothing else is changed.

Both are transparent for hop-by-hop headers in the usual way (RFC 9110 section 7.6.1): they
drop Connection, Keep-Alive, Transfer-Encoding and the headers Connection names, and send a
Content-Length of their own.
"""

from __future__ import annotations

import http.client
import json
import socket
import struct
import threading
import zlib
from base64 import b64decode, b64encode
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Ancillary (c), private (t), reserved bit clear (B), safe to copy (d): PNG spec section 5.4.
BODY_CHUNK = b"ctBd"
_HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding",
                         "te", "trailer", "upgrade", "content-length"})
# Set by the cache in --simulate-pass-headers runs; every other stored origin header is replayed.
_CACHE_OWN = frozenset({"age", "content-type", "content-length"})
_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PURGE", "M-SEARCH",
            "FOO")
_UPSTREAM_TIMEOUT = 30.0
Headers = list[tuple[str, str]]


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def wrap_png(body: bytes, content_type: str | None, headers: Headers) -> bytes:
    """A 1x1 greyscale PNG carrying ``body``, ``content_type`` and the origin's ``headers``
    (read only by ``--simulate-pass-headers``) in a ``ctBd`` chunk."""
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    payload = json.dumps({"body": b64encode(body).decode("ascii"), "type": content_type,
                          "headers": headers})
    return b"".join((PNG_SIGNATURE, _chunk(b"IHDR", ihdr), _chunk(BODY_CHUNK, payload.encode()),
                     _chunk(b"IDAT", zlib.compress(b"\x00\x00")), _chunk(b"IEND", b"")))


def unwrap_png(data: bytes) -> tuple[bytes, str | None, Headers] | None:
    """The (body, content type, headers) a ``wrap_png`` image carries; None for other bytes."""
    if not data.startswith(PNG_SIGNATURE):
        return None
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        if kind == BODY_CHUNK:
            payload = json.loads(data[pos + 8:pos + 8 + length])
            return (b64decode(payload["body"]), payload["type"],
                    [(k, v) for k, v in payload["headers"]])
        pos += 12 + length
    return None


def _end_to_end(headers: Headers) -> Headers:
    named = {name.strip().lower() for value in (v for k, v in headers if k.lower() == "connection")
             for name in value.split(",")}
    return [(k, v) for k, v in headers if k.lower() not in _HOP_BY_HOP and k.lower() not in named]


class _Proxy(BaseHTTPRequestHandler):
    """Forwards one request to ``upstream(path) -> (port, path)`` and relays the answer."""

    protocol_version = "HTTP/1.1"
    upstream: Callable[[str], tuple[int, str]]

    def log_message(self, format: str, *args: object) -> None:  # quiet: the suite reports
        pass

    def request_headers(self) -> Headers:
        return _end_to_end([(k, v) for k, v in self.headers.items() if k.lower() != "host"])

    def _relay(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        port, path = self.upstream(self.path)
        headers = self.request_headers()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=_UPSTREAM_TIMEOUT)
        try:
            conn.putrequest(self.command, path, skip_host=True, skip_accept_encoding=True)
            conn.putheader("Host", f"127.0.0.1:{port}")
            for name, value in headers:
                conn.putheader(name, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body)
            response = conn.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            # The origin hung up (the suite's "disconnect" tests): hang up on the client too.
            self.close_connection = True
            return
        finally:
            conn.close()
        status, out, data = self.transform(response.status, _end_to_end(response.getheaders()),
                                           data)
        # Not send_response: it would add this proxy's own Server and Date headers.
        self.send_response_only(status, response.reason)
        for name, value in out:
            self.send_header(name, value)
        if status >= 200 and status not in (204, 304):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def transform(self, status: int, headers: Headers, data: bytes) -> tuple[int, Headers, bytes]:
        return status, headers, data


for _method in _METHODS:
    setattr(_Proxy, f"do_{_method}", _Proxy._relay)


# Req-Num of the client's last request per test path, noted by the front, read by the shim.
_CLIENT_NUMBERS: dict[str, str] = {}


class _Shim(_Proxy):
    simulate = False
    seen: dict[str, int] = {}
    seen_lock = threading.Lock()

    def request_headers(self) -> Headers:
        headers = super().request_headers()
        if any(k.lower() == "req-num" for k, _ in headers):
            return headers
        # The client's Req-Num does not reach the origin (the cache sends no client header):
        # the number of the client's request that made the cache fetch, else counted here.
        test = self.path.partition("?")[0]
        with self.seen_lock:
            self.seen[test] = counted = self.seen.get(test, 0) + 1
        return headers + [("Req-Num", _CLIENT_NUMBERS.get(test, str(counted)))]

    def transform(self, status: int, headers: Headers, data: bytes) -> tuple[int, Headers, bytes]:
        if status != 200 or self.command != "GET":
            return status, headers, data
        types = [v for k, v in headers if k.lower() == "content-type"]
        headers = [(k, v) for k, v in headers if k.lower() != "content-type"]
        return status, [*headers, ("Content-Type", "image/png")], \
            wrap_png(data, types[0] if types else None, headers)


class _Front(_Proxy):
    simulate = False

    def request_headers(self) -> Headers:
        headers = super().request_headers()
        number = [v for k, v in headers if k.lower() == "req-num"]
        if number:
            _CLIENT_NUMBERS[self.path.partition("?")[0]] = number[0]
        return headers

    def transform(self, status: int, headers: Headers, data: bytes) -> tuple[int, Headers, bytes]:
        unwrapped = unwrap_png(data)
        if unwrapped is None:
            return status, headers, data
        body, content_type, origin_headers = unwrapped
        if content_type is not None:
            headers = [(k, content_type if k.lower() == "content-type" and v == "image/png" else v)
                       for k, v in headers]
        if self.simulate:
            # What a cache replaying the stored origin headers would send: every origin
            # header as stored (Cache-Control, ETag, Date... too); the cache's own values
            # only for Age and for what the origin did not send.
            replayed = {k.lower() for k, _ in origin_headers} - _CACHE_OWN
            headers = [(k, v) for k, v in headers if k.lower() not in replayed] + \
                [(k, v) for k, v in origin_headers if k.lower() in replayed]
        return status, headers, body


class Server:
    """A proxy on 127.0.0.1:{port} in a daemon thread."""

    def __init__(self, handler: type[_Proxy], upstream: Callable[[str], tuple[int, str]],
                 simulate: bool) -> None:
        handler = type(handler.__name__, (handler,), {
            "upstream": staticmethod(upstream), "simulate": simulate, "seen": {}})
        self.httpd = _Quiet(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.port = int(self.httpd.server_address[1])
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a client that hung up (the suite's timeouts, its "disconnect" tests)


def shim(origin_port: int, simulate: bool = False) -> Server:
    return Server(_Shim, lambda path: (origin_port, path), simulate)


def front(origin_port: int, cache_port: int, prefix: str, origin_name: str,
          simulate: bool = False) -> Server:
    def route(path: str) -> tuple[int, str]:
        if path.startswith(("/config/", "/state/")):
            return origin_port, path
        return cache_port, f"{prefix}/o/{origin_name}{path}"
    return Server(_Front, route, simulate)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
