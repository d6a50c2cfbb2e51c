"""The Flask example: a page of images served through fic_middleware.

Configured only from the environment, so the same module runs under any server::

    FIC_CACHE_DIR=var/demo-cache FIC_ORIGINS=demo=http://127.0.0.1:8001/images \\
    FIC_ALLOWED_NETWORKS=127.0.0.1/32 gunicorn -w 2 examples.flask_app.app:app

(``FIC_ALLOWED_NETWORKS`` because the sample origin is on loopback, which the address
policy refuses otherwise; ``FIC_ADMIN_TOKEN=...`` adds the dashboard at ``/_fic/_admin/``.)
``scripts/demo`` does all of this for you.
"""

from __future__ import annotations

import runpy
from pathlib import Path

from flask import Flask, render_template

from fic_middleware import FastImageCache

# Read from the sample origin next door so the page and the origin cannot drift apart.
IMAGE_NAMES: tuple[str, ...] = runpy.run_path(
    str(Path(__file__).resolve().parents[1] / "origin.py"))["IMAGE_NAMES"]

app = Flask(__name__)
# Everything under the prefix is answered by the middleware; Flask only sees the rest.
fic = FastImageCache(app.wsgi_app)
app.wsgi_app = fic  # type: ignore[method-assign]


@app.get("/")
def index() -> str:
    prefix = fic.config.prefix
    urls = {name: f"{prefix}/o/demo/{name}.png" for name in IMAGE_NAMES}
    # The dashboard exists only with an admin token (FIC_ADMIN_TOKEN; scripts/demo sets one).
    admin_url = f"{prefix}/_admin/" if fic.config.admin_token else None
    return render_template("index.html", title="fic_middleware + Flask", urls=urls,
                           prefix=prefix, admin_url=admin_url)
