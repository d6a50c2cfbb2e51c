"""Rules that involve more than one option, checked on parsed values. Pure: no files, no
imports, no directories (:mod:`config` does those once these pass), so every rule can be
tested on a plain mapping. Each message names the option and shows the values involved."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .errors import ConfigError


def validate(values: Mapping[str, Any]) -> None:
    """Raise ConfigError for the first rule ``values`` break."""
    if values["backend"] == "lmdb" and not values["cache_dir"]:
        raise ConfigError("cache_dir: required with backend 'lmdb'")
    for origin in values["origin_headers"]:
        if origin not in values["origins"]:
            raise ConfigError(f"origin_headers: {origin!r} is not a configured origin "
                              f"(origins: {', '.join(sorted(values['origins'])) or 'none'})")
    if not values["min_ttl"] <= values["max_ttl"]:
        raise ConfigError(f"min_ttl: must not exceed max_ttl ({values['min_ttl']:g}s > "
                          f"{values['max_ttl']:g}s)")
    if values["max_image_bytes"] < 1:
        raise ConfigError("max_image_bytes: must be at least 1 byte, got 0")
    if values["max_bytes"] < values["max_image_bytes"]:
        raise ConfigError(f"max_bytes: must be at least max_image_bytes "
                          f"({values['max_bytes']} < {values['max_image_bytes']} bytes)")
    for name in ("connect_timeout", "read_timeout", "total_timeout"):
        if values[name] <= 0:
            raise ConfigError(f"{name}: must be more than 0 seconds, got {values[name]:g}")
    if values["signing_key"] is not None and not values["signing_key"].strip():
        raise ConfigError("signing_key: must not be empty")
    for secret in ("encryption_key", "admin_token", "redis_key"):
        if values[secret] == "":
            raise ConfigError(f"{secret}: must not be empty")
    if values["redis_url"]:
        if not values["redis_key"] and not values["encryption_key"]:
            raise ConfigError("redis_key: required with redis_url (or set encryption_key): "
                              "records from Redis are authenticated with it")
        if not values["redis_url"].startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("redis_url: expected redis://, rediss:// or unix://, got '***'")
    if values["cors_origins"] and any(h.lower() == "access-control-allow-origin"
                                      for h in values["add_headers"]):
        raise ConfigError("add_headers: Access-Control-Allow-Origin is answered by "
                          "cors_origins; set one or the other")
