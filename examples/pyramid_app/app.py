"""The Pyramid example: the same page as the Flask one, with ``fic_middleware.pyramid``.

``config.include("fic_middleware.pyramid")`` puts the middleware in front of the app and
adds ``request.fic_url()``. Configured only from the environment (see
``examples/flask_app/app.py``); ``fic.<option>`` settings would work too::

    FIC_CACHE_DIR=var/demo-cache FIC_ORIGINS=demo=http://127.0.0.1:8001/images \\
    FIC_ALLOWED_NETWORKS=127.0.0.1/32 gunicorn -w 2 examples.pyramid_app.app:app
"""

from __future__ import annotations

import json
import runpy
from html import escape
from pathlib import Path

from pyramid.config import Configurator
from pyramid.request import Request
from pyramid.response import Response

# Read from the sample origin next door so the page and the origin cannot drift apart.
IMAGE_NAMES: tuple[str, ...] = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "origin.py"))["IMAGE_NAMES"]
TITLE = "fic_middleware + Pyramid"

# The same page as examples/flask_app/templates/index.html, without a template engine.
PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>
  body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 60rem; margin: 2rem auto; }}
  .grid {{ display: grid; gap: 1rem;
          grid-template-columns: repeat(auto-fill, minmax(160px, 1fr)); }}
  figure {{ margin: 0; }}
  img {{ display: block; width: 100%; height: auto; border-radius: 6px; }}
  figcaption {{ font-size: .85rem; color: #555; }}
  code {{ color: #063; }}
</style>
<script>
  // HEAD each image before the <img> tags exist, so the labels show what the first request
  // got: "fic; fwd=miss; stored" on a cold cache, "fic; hit" after a reload.
  const statuses = Object.fromEntries({urls}.map(url => [url,
    fetch(url, {{method: "HEAD", cache: "no-store"}})
      .then(r => r.headers.get("Cache-Status") || `HTTP ${{r.status}}`, () => "failed")]));
  addEventListener("DOMContentLoaded", () => {{
    for (const img of document.querySelectorAll("img")) {{
      const label = img.nextElementSibling.querySelector("code");
      statuses[img.getAttribute("src")].then(status => {{ label.textContent = status; }});
    }}
  }});
</script>
</head>
<body>
<h1>{title}</h1>
<p>Each image is fetched once from the origin and stored in a local LMDB cache shared by all
gunicorn workers: reload the page and every label turns to <code>fic; hit</code>.</p>
<div class="grid">
{figures}
</div>
</body>
</html>
"""
FIGURE = """  <figure>
    <img src="{url}" alt="{name}" width="160" height="120">
    <figcaption>{name}: <code>…</code></figcaption>
  </figure>"""


def index(request: Request) -> Response:
    urls = {name: request.fic_url(f"{name}.png", origin="demo") for name in IMAGE_NAMES}
    figures = "\n".join(FIGURE.format(url=escape(url), name=escape(name))
                        for name, url in urls.items())
    # "</" inside a <script> would end it early; JSON allows escaping the slash.
    script_urls = json.dumps(list(urls.values())).replace("</", "<\\/")
    return Response(PAGE.format(title=escape(TITLE), urls=script_urls, figures=figures),
                    content_type="text/html", charset="utf-8")


with Configurator() as config:
    # The middleware answers under its prefix, before Pyramid makes a request; the rest
    # goes to Pyramid. FIC_* environment variables configure it.
    config.include("fic_middleware.pyramid")
    config.add_route("index", "/")
    config.add_view(index, route_name="index")
    app = config.make_wsgi_app()
