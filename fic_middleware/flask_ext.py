"""Flask: what ``FastImageCache.init_app(app, **options)`` does, and the ``fic_url`` Jinja
global.

::

    from fic_middleware import FastImageCache

    app = Flask(__name__)
    app.config["FIC_CACHE_DIR"] = "/var/cache/fic"
    FastImageCache.init_app(app, origins={"cdn": "https://images.example.com/media"})

.. code-block:: jinja

    <img src="{{ fic_url('2024/cat.jpg', origin='cdn') }}">
    <img src="{{ fic_url('https://example.org/dog.png') }}">  {# signed, needs signing_key #}

``init_app`` wraps ``app.wsgi_app`` (the middleware answers under the prefix, Flask gets
everything else untouched) and keeps the middleware in ``app.extensions["fic_middleware"]``.
Options: the keyword arguments, then ``FIC_*`` environment variables, then ``FIC_<NAME>``
keys of ``app.config``, then ``config_file``; checked when ``init_app`` runs. ``fic_url``
is :class:`~fic_middleware.urlbuilder.UrlBuilder`, with the request's ``SCRIPT_NAME`` in
front when the app is mounted below one. Flask itself is imported only by ``init_app``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import OPTION_BY_NAME, file_options
from .errors import ConfigError
from .urlbuilder import UrlBuilder

if TYPE_CHECKING:
    from flask import Flask

    from .middleware import FastImageCache

EXTENSION = "fic_middleware"
CONFIG_PREFIX = "FIC_"


def install(app: Flask, fic: FastImageCache) -> None:
    """Put ``fic`` in front of ``app.wsgi_app`` and add ``fic_url`` to Jinja (the middleware
    module calls this; this module never imports it, so the two have no import cycle)."""
    from flask import has_request_context, request

    if EXTENSION in app.extensions:
        raise RuntimeError(f"fic_middleware: init_app() already ran for {app.name!r}")
    app.wsgi_app = fic  # type: ignore[method-assign]
    app.extensions[EXTENSION] = fic
    urls = UrlBuilder(fic.config)

    def fic_url(target: str, origin: str | None = None) -> str:
        path = urls(target, origin)
        return request.script_root + path if has_request_context() else path

    app.add_template_global(fic_url, "fic_url")


def app_options(app: Flask) -> dict[str, Any]:
    """``FIC_<NAME>`` keys of ``app.config``: a file's worth of options, below the environment."""
    found = {}
    for key, value in app.config.items():
        if not key.startswith(CONFIG_PREFIX):
            continue
        name = key[len(CONFIG_PREFIX):].lower()
        if name not in OPTION_BY_NAME:
            raise ConfigError(f"{key}: unknown option in app.config")
        found[name] = value
    return file_options(found)
