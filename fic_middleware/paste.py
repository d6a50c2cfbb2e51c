"""PasteDeploy: ``use = egg:fic-middleware#main`` in a ``[filter:...]`` section.

::

    [filter:fic]
    use = egg:fic-middleware#main
    cache_dir = /var/cache/fic
    origins =
        cdn=https://images.example.com/media
    origin_headers.cdn =
        Authorization: Bearer xyz

    [pipeline:main]
    pipeline = fic myapp

The section takes the options of the ``[fic]`` INI form (README, "Configuration"), as
strings, checked as keyword options are: a wrong one is a :class:`~fic_middleware.ConfigError`
naming it when the pipeline is loaded. The section is a configuration *file*, so a
``FIC_<NAME>`` environment variable beats it (docs/CONFIGURATION.md: keyword arguments >
environment > file). ``[DEFAULT]`` (paste's ``global_conf``) is the whole file's, not
ours, and is ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from .config import Config, file_options
from .middleware import FastImageCache

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication


def filter_app_factory(app: WSGIApplication, global_conf: Mapping[str, str],
                       **local_conf: str) -> FastImageCache:
    """The ``paste.filter_app_factory`` entry point ``main``."""
    return FastImageCache(app, Config.load(**file_options(local_conf)))
