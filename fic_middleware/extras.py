"""Optional dependencies (the package extras): one check, one message naming the option."""

from __future__ import annotations

import importlib
from types import ModuleType

from .errors import ConfigError


def require(module: str, extra: str, option: str) -> ModuleType:
    """Import ``module``, or raise ConfigError naming ``option`` and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ConfigError(f"{option}: needs the {module.partition('.')[0]} package "
                          f"(pip install 'fic-middleware[{extra}]')") from None
