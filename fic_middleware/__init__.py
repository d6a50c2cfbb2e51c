"""fic_middleware ("Fast Image Cache"): a WSGI middleware that serves images from a local cache."""

from __future__ import annotations

from .errors import ConfigError
from .middleware import FastImageCache
from .signing import sign_url

__version__ = "0.1.0"
__all__ = ["ConfigError", "FastImageCache", "__version__", "sign_url"]
