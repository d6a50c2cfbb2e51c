"""The app behind ``examples/paste.ini``: a page of the sample origin's images.

It knows nothing of fic_middleware: the ``fic`` filter in front of it in the pipeline
answers every ``/_fic/...`` request, this app gets the rest.
"""

from __future__ import annotations

import runpy
from collections.abc import Iterable
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# Read from the sample origin next door so the page and the origin cannot drift apart.
IMAGE_NAMES: tuple[str, ...] = runpy.run_path(
    str(Path(__file__).resolve().parent / "origin.py"))["IMAGE_NAMES"]


def app_factory(global_conf: dict[str, str], *, title: str = "fic_middleware + PasteDeploy",
                images: str = "/_fic/o/demo") -> WSGIApplication:
    """``use = call:examples.paste_app:app_factory``; ``images`` is where the filter serves
    the origin's images (``{prefix}/o/{origin}``)."""
    figures = "\n".join(f'<img src="{escape(images)}/{name}.png" alt="{name}" width="160">'
                        for name in IMAGE_NAMES)
    page = (f'<!doctype html>\n<html lang="en">\n<meta charset="utf-8">\n'
            f"<title>{escape(title)}</title>\n<h1>{escape(title)}</h1>\n{figures}\n"
            f"</html>\n").encode()

    def app(environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") not in ("", "/"):
            start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
            return [b"not found\n"]
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(page)))])
        return [page]
    return app
