"""A WSGI app for the gunicorn tests, configured by FIC_* environment variables.

Every response names the worker that produced it (X-Worker-Pid), so a test can see that
all workers answered from the one shared cache.
"""

from __future__ import annotations

import os
from typing import Any

from fic_middleware import FastImageCache


def downstream(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


cached = FastImageCache(downstream)


def app(environ: dict[str, Any], start_response: Any) -> Any:
    def tagged(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, ("X-Worker-Pid", str(os.getpid()))], exc_info)
    return cached(environ, tagged)
