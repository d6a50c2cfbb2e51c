"""A tiny local image origin for the examples, the demo and the tests (stdlib only).

Serves deterministic, generated PNGs at ``/images/<name>.png`` so the demo works offline
and the tests can compare the middleware's bytes with the origin's. Binds 127.0.0.1 only::

    python examples/origin.py                # port 8001; prints one line when ready

The port is fixed (``--port``; ``scripts/demo`` takes ``ORIGIN_PORT``) because the origin's
URL is part of every cache key: on the same port, a restarted demo finds its cache warm.
``--port 0`` picks a free port (the tests); the ready line ends with the base URL to
configure as an origin (``FIC_ORIGINS="demo=<that URL>"``).
"""

from __future__ import annotations

import argparse
import functools
import math
import struct
import sys
import threading
import zlib
from collections.abc import Callable
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

WIDTH, HEIGHT = 160, 120
# A fixed date: the images never change, and revalidation (If-Modified-Since) can be exercised.
LAST_MODIFIED = formatdate(1_700_000_000, usegmt=True)

Pattern = Callable[[float, float], float]  # (x, y) in [0, 1) -> colour mix in [0, 1]
Colour = tuple[int, int, int]

# name -> (pattern, from colour, to colour); each name looks clearly different.
_IMAGES: dict[str, tuple[Pattern, Colour, Colour]] = {
    "sunrise": (lambda x, y: y, (255, 94, 58), (255, 214, 102)),
    "ocean": (lambda x, y: x, (0, 48, 120), (0, 200, 200)),
    "forest": (lambda x, y: (x + y) / 2, (16, 80, 32), (160, 220, 90)),
    "lavender": (lambda x, y: min(1.0, math.hypot(x - 0.5, y - 0.5) * 1.6),
                 (230, 210, 255), (90, 40, 160)),
    "ember": (lambda x, y: 0.5 + 0.5 * math.sin(math.hypot(x - 0.5, y - 0.5) * 40),
              (120, 10, 0), (255, 170, 0)),
    "glacier": (lambda x, y: (int(x * 8) + int(y * 6)) % 2, (200, 235, 255), (40, 110, 190)),
    "citrus": (lambda x, y: int((x + y) * 10) % 2, (255, 230, 0), (255, 120, 0)),
    "orchid": (lambda x, y: 0.5 + 0.5 * math.sin(x * 12 + math.sin(y * 9) * 2),
               (255, 120, 200), (110, 0, 130)),
    "meadow": (lambda x, y: 0.25 * (2 + math.sin(x * 20) + math.sin(y * 15 + x * 5)),
               (40, 140, 40), (240, 240, 120)),
    "dusk": (lambda x, y: min(1.0, abs(x - 0.5) + abs(y - 0.5)) ** 0.7,
             (255, 150, 80), (30, 20, 90)),
    "coral": (lambda x, y: int(x * 16) % 4 == 0 or int(y * 12) % 4 == 0,
              (255, 127, 110), (250, 250, 250)),
    "slate": (lambda x, y: (math.atan2(y - 0.5, x - 0.5) / math.pi + 1) / 2,
              (40, 50, 60), (150, 175, 200)),
}
IMAGE_NAMES: tuple[str, ...] = tuple(_IMAGES)


def _png(width: int, height: int, pixel: Callable[[int, int], Colour]) -> bytes:
    """An 8-bit RGB PNG: signature, IHDR, one zlib IDAT, IEND (PNG spec §5)."""
    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data))

    raw = bytearray()
    for y in range(height):
        raw.append(0)  # filter type "None" for every scanline
        for x in range(width):
            raw.extend(pixel(x, y))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(raw), 9)) + chunk(b"IEND", b""))


@functools.cache
def image(name: str) -> bytes:
    """The PNG bytes of ``name`` (one of IMAGE_NAMES), generated once per process."""
    pattern, a, b = _IMAGES[name]

    def pixel(x: int, y: int) -> Colour:
        t = pattern(x / WIDTH, y / HEIGHT)
        return (round(a[0] + (b[0] - a[0]) * t), round(a[1] + (b[1] - a[1]) * t),
                round(a[2] + (b[2] - a[2]) * t))
    return _png(WIDTH, HEIGHT, pixel)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so the middleware's connection pool is used
    server_version = "fic-example-origin"

    def do_GET(self) -> None:
        self._respond(body=True)

    def do_HEAD(self) -> None:
        self._respond(body=False)

    def _respond(self, body: bool) -> None:
        path = self.path.split("?", 1)[0]
        name = path.removeprefix("/images/").removesuffix(".png")
        if path != f"/images/{name}.png" or name not in _IMAGES:
            self._send(404, b"no such image\n", "text/plain; charset=utf-8", body)
            return
        if self.headers.get("If-Modified-Since") == LAST_MODIFIED:
            self._send(304, b"", None, body)
            return
        self._send(200, image(name), "image/png", body)

    def _send(self, status: int, data: bytes, content_type: str | None, body: bool) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status != 404:
            self.send_header("Last-Modified", LAST_MODIFIED)
            self.send_header("Cache-Control", "max-age=3600")
        if status != 304:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if body and status != 304:
            self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: the demo's terminal belongs to gunicorn's log


class OriginServer(ThreadingHTTPServer):
    """The origin, serving from a background thread; ``close()`` stops it."""

    daemon_threads = True
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Base URL of the images, as an origin's base for FIC_ORIGINS."""
        return f"http://127.0.0.1:{self.server_address[1]}/images"

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()
            self._thread.join()
        self.server_close()


def serve(port: int = 0) -> OriginServer:
    """Start the origin on 127.0.0.1:``port`` (0: a free port) in a daemon thread."""
    server = OriginServer(("127.0.0.1", port), _Handler)
    server._thread = threading.Thread(target=server.serve_forever, name="origin", daemon=True)
    server._thread.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8001,
                        help="port on 127.0.0.1 (0: any free port)")
    args = parser.parse_args(argv)
    with OriginServer(("127.0.0.1", args.port), _Handler) as server:
        print(f"origin ready: {server.url}", flush=True)
        try:
            server.serve_forever()
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
