"""The Bottle example: a Bottle app wrapped in FastImageCache, plain WSGI.

Configured only from the environment, like the Flask and Pyramid examples::

    FIC_CACHE_DIR=var/demo-cache FIC_ORIGINS=demo=http://127.0.0.1:8001/images \\
    FIC_ALLOWED_NETWORKS=127.0.0.1/32 gunicorn examples.bottle_app:app

(or ``python examples/bottle_app.py`` for Bottle's own server on 127.0.0.1:8080).
"""

from __future__ import annotations

import runpy
from pathlib import Path

import bottle

from fic_middleware import FastImageCache
from fic_middleware.urlbuilder import UrlBuilder

# Read from the sample origin next door so the page and the origin cannot drift apart.
IMAGE_NAMES: tuple[str, ...] = runpy.run_path(
    str(Path(__file__).resolve().parent / "origin.py"))["IMAGE_NAMES"]

PAGE = """<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>fic_middleware + Bottle</title>
<h1>fic_middleware + Bottle</h1>
% for name in names:
<img src="{{fic_url(name + '.png', origin='demo')}}" alt="{{name}}" width="160">
% end
</html>
"""

site = bottle.Bottle()
# The WSGI app to serve: the middleware answers under its prefix, Bottle gets the rest.
app = FastImageCache(site)
fic_url = UrlBuilder(app.config)


@site.get("/")
def index() -> str:
    return bottle.template(PAGE, names=IMAGE_NAMES, fic_url=fic_url)


if __name__ == "__main__":
    bottle.run(app, host="127.0.0.1", port=8080)
