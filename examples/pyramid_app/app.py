"""The Pyramid example: the same page as the Flask one, with ``fic_middleware.pyramid``.

``config.include("fic_middleware.pyramid")`` puts the middleware in front of the app and
adds ``request.fic_url()``. Configured only from the environment (see
``examples/flask_app/app.py``); ``fic.<option>`` settings would work too::

    FIC_CACHE_DIR=var/demo-cache FIC_ORIGINS=demo=http://127.0.0.1:8001/images \\
    FIC_ALLOWED_NETWORKS=127.0.0.1/32 gunicorn -w 2 examples.pyramid_app.app:app
"""

from __future__ import annotations

import runpy
from pathlib import Path

from jinja2 import Environment, FileSystemLoader
from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

# Read from the sample origin next door so the page and the origin cannot drift apart.
IMAGE_NAMES: tuple[str, ...] = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "origin.py"))["IMAGE_NAMES"]
TITLE = "fic_middleware + Pyramid"

# The Flask example's page: one template, so the two demos cannot drift apart.
TEMPLATES = Environment(loader=FileSystemLoader(Path(__file__).resolve().parents[1]
                                                / "flask_app" / "templates"),
                        autoescape=True)


def index(request: Request) -> Response:
    fic = request.registry["fic_middleware"]
    prefix = fic.config.prefix
    urls = {name: request.fic_url(f"{name}.png", origin="demo") for name in IMAGE_NAMES}
    # The dashboard exists only with an admin token (FIC_ADMIN_TOKEN; scripts/demo sets one).
    admin_url = f"{request.script_name}{prefix}/_admin/" if fic.config.admin_token else None
    page = TEMPLATES.get_template("index.html").render(
        title=TITLE, urls=urls, prefix=prefix, admin_url=admin_url)
    return Response(page, content_type="text/html", charset="utf-8")


with Configurator() as config:
    # The middleware answers under its prefix, before Pyramid makes a request; the rest
    # goes to Pyramid. FIC_* environment variables configure it.
    config.include("fic_middleware.pyramid")
    config.add_route("index", "/")
    config.add_view(index, route_name="index")
    app = config.make_wsgi_app()
