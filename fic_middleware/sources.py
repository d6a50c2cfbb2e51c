"""Where options come from, besides keyword arguments: ``FIC_*`` environment variables and
the ``[fic]`` section of a TOML or INI file (``config_file``, PasteDeploy, Pyramid settings).

Each source returns raw values by option name; :meth:`Config.load` merges and parses them
(keyword arguments > environment > file > defaults).
"""

from __future__ import annotations

import configparser
import difflib
import logging
import sys
from collections.abc import Mapping
from typing import Any

from .errors import ConfigError
from .options import origins as parse_origins

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

log = logging.getLogger("fic_middleware")


def from_environ(environ: Mapping[str, str], names: tuple[str, ...]) -> dict[str, Any]:
    """``FIC_<NAME>`` for every option; ``FIC_ORIGIN_HEADERS_<ORIGIN>`` for one origin's headers.

    Other ``FIC_`` names are logged and ignored: the prefix is not ours alone (Kubernetes
    sets ``FIC_PORT``, ``FIC_SERVICE_HOST``... in every pod when a Service is named ``fic``).
    """
    found: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith("FIC_"):
            continue
        name = env_option(key, names)
        if name is None:
            if key[4:].lower() == "origin_headers":  # ours, but needs the origin in the name
                raise ConfigError(f"{key}: set one origin's headers "
                                  "with FIC_ORIGIN_HEADERS_<ORIGIN>")
            _ignore(key, names)
        elif name.startswith("origin_headers_"):
            headers[name[len("origin_headers_"):].replace("_", "-")] = value
        else:
            found[name] = value
    if headers:
        # Env names cannot hold '-': FIC_ORIGIN_HEADERS_MY_CDN serves origin my_cdn or my-cdn.
        origins = parse_origins("origins", found["origins"]) if "origins" in found else None
        found["origin_headers"] = {_env_origin(o, origins): v for o, v in headers.items()}
    return found


def env_option(key: str, names: tuple[str, ...]) -> str | None:
    """The option (or ``origin_headers_<origin>``) that environment variable ``key`` sets."""
    if not key.startswith("FIC_"):
        return None
    name = key[4:].lower()
    if (name in names and name != "origin_headers") or (name.startswith("origin_headers_") and name != "origin_headers_"):
        return name
    return None


def _ignore(key: str, names: tuple[str, ...]) -> None:
    close = difflib.get_close_matches(key[4:].lower(), names, n=1)
    hint = f" (did you mean FIC_{close[0].upper()}?)" if close else ""
    log.warning("ignoring %s: not an option%s", key, hint)


def _env_origin(spelled: str, origins: Mapping[str, str] | None) -> str:
    for candidate in (spelled.replace("-", "_"), spelled):
        if origins is None or candidate in origins:
            return candidate
    return spelled


def read_file(path: str, names: tuple[str, ...]) -> dict[str, Any]:
    """Read the ``[fic]`` section of a TOML (``.toml``) or INI file."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise ConfigError(f"config_file: cannot read {path!r} ({exc.strerror})") from None
    if path.endswith(".toml"):
        try:
            section = tomllib.loads(data.decode("utf-8")).get("fic")
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config_file: {path!r} is not valid TOML ({exc})") from None
        if not isinstance(section, dict):
            raise ConfigError(f"config_file: {path!r} has no [fic] table")
        values = dict(section)
    else:
        # [DEFAULT] (paste's global_conf) is the whole file's, not ours: keep it a plain
        # section, so that it is not mixed into [fic].
        parser = configparser.ConfigParser(interpolation=None, default_section="\0")
        try:
            parser.read_string(data.decode("utf-8"), source=path)
        except (configparser.Error, UnicodeDecodeError) as exc:
            raise ConfigError(f"config_file: {path!r} is not a valid INI file ({exc})") from None
        if not parser.has_section("fic"):
            raise ConfigError(f"config_file: {path!r} has no [fic] section")
        values = from_ini(dict(parser.items("fic")))
    unknown = sorted(set(values) - set(names))
    if unknown:
        raise ConfigError(f"{unknown[0]}: unknown option in {path!r}")
    values.pop("config_file", None)
    return values


def from_ini(items: Mapping[str, str]) -> dict[str, Any]:
    """Fold INI/paste keys ``origin_headers.<origin>`` into the ``origin_headers`` option."""
    values: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for key, value in items.items():
        if key.startswith("origin_headers."):
            headers[key.split(".", 1)[1]] = value
        else:
            values[key] = value
    if headers:
        values["origin_headers"] = headers
    return values
