"""One option table for every interface: keyword arguments, ``FIC_*`` environment variables,
a ``[fic]`` section of an INI or TOML file (``config_file``).

Precedence: keyword arguments > environment > file > defaults. Every value is parsed and
checked here, once, into a frozen :class:`Config`; a wrong value is a :class:`ConfigError`
that names the option, at start-up, never on the first request.
"""

from __future__ import annotations

import configparser
import dataclasses
import hashlib
import ipaddress
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any

from .errors import ConfigError
from .extras import require
from .imagetypes import DEFAULT_TYPES, KNOWN_TYPES, canonical_type
from .urls import canonical_url, host_to_ascii

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": KiB, "kb": 1000, "kib": KiB,
    "m": MiB, "mb": 1000**2, "mib": MiB,
    "g": GiB, "gb": 1000**3, "gib": GiB,
    "t": 1024 * GiB, "tb": 1000**4, "tib": 1024 * GiB,
}
_DURATION_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_NUMBER_WITH_UNIT = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*")
_ORIGIN_NAME = re.compile(r"[a-z0-9_-]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PREFIX = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")
_LARGEST = float(2**53)
_DIGITS = re.compile(r"\s*[0-9]{1,18}\s*")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# --- value parsers: (option name, raw value) -> parsed value --------------------------------

def _bad(name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{name}: expected {expected}, got {value!r}")


def _str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(name, "a string", value)
    return value


def _path(name: str, value: Any) -> str:
    path = _str(name, value)
    if "\0" in path:
        raise _bad(name, "a file or directory path", value)
    return path


def _bool(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _bad(name, "true or false", value)


def _number_with_unit(name: str, value: Any, units: Mapping[str, float], expected: str) -> float:
    # bool is an int subclass: True must not silently mean 1 byte or 1 second.
    if isinstance(value, bool):
        raise _bad(name, expected, value)
    try:
        if isinstance(value, (int, float)):
            number = float(value)
        elif isinstance(value, str) and (m := _NUMBER_WITH_UNIT.fullmatch(value)):
            unit = m.group(2).lower()
            if unit not in units:
                raise _bad(name, expected, value)
            number = float(m.group(1)) * units[unit]
        else:
            raise _bad(name, expected, value)
    except OverflowError:
        raise _bad(name, expected, value) from None
    # NaN fails both comparisons; sizes and durations beyond 2**53 are typos, not settings.
    if not 0 <= number <= _LARGEST:
        raise _bad(name, expected, value)
    return number


def _size(name: str, value: Any) -> int:
    return int(_number_with_unit(name, value, _SIZE_UNITS, "a size like 10MiB"))


def _duration(name: str, value: Any) -> float:
    return _number_with_unit(name, value, _DURATION_UNITS, "a duration like 30s, 5m or 1d")


def _count(name: str, value: Any) -> int:
    if isinstance(value, str) and _DIGITS.fullmatch(value):  # ASCII digits: not '²'
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise _bad(name, "a whole number >= 0", value)


def _optional(parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def parse_optional(name: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
            return None
        return parse(name, value)
    return parse_optional


def _words(name: str, value: Any) -> tuple[str, ...]:
    """A list option: a Python list/tuple, or a comma/whitespace-separated string."""
    if isinstance(value, str):
        return tuple(w for w in re.split(r"[\s,]+", value) if w)
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise _bad(name, "a list of strings", value)


def _types(name: str, value: Any) -> frozenset[str]:
    types = set()
    for word in _words(name, value):
        canonical = canonical_type(word)
        if canonical not in KNOWN_TYPES:
            raise ConfigError(f"{name}: unsupported image type {word!r} "
                              f"(known: {', '.join(sorted(KNOWN_TYPES))})")
        types.add(canonical)
    return frozenset(types)


def _networks(name: str, value: Any) -> tuple[Network, ...]:
    if isinstance(value, (list, tuple)):
        value = [str(v) if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else v
                 for v in value]
    try:
        return tuple(ipaddress.ip_network(w, strict=False) for w in _words(name, value))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


def _float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _bad(name, "a number", value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise _bad(name, "a number", value) from None
    if not number >= 0 or number == float("inf"):
        raise _bad(name, "a number >= 0", value)
    return number


def _positive(name: str, value: Any) -> int:
    count = _count(name, value)
    if count < 1:
        raise _bad(name, "a whole number >= 1", value)
    return count


def _hosts(name: str, value: Any) -> tuple[str, ...]:
    """Exact host names or ``*.suffix`` patterns, lower-case ASCII (IDNA)."""
    hosts = []
    for word in _words(name, value):
        wildcard = word.startswith("*.")
        host = word[2:] if wildcard else word
        try:
            ascii_host = host_to_ascii(host.strip("[]"))
        except ValueError:
            raise ConfigError(f"{name}: {word!r} is not a host name or *.suffix pattern") from None
        if not ascii_host or "*" in ascii_host:
            raise ConfigError(f"{name}: {word!r} is not a host name or *.suffix pattern")
        hosts.append(f"*.{ascii_host}" if wildcard else ascii_host)
    return tuple(hosts)


def _secret_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _bad(name, "a string", "***")
    return value


def _secret_words(name: str, value: Any) -> tuple[str, ...]:
    try:
        words = _words(name, value)
    except ConfigError:
        raise _bad(name, "a list of strings", "***") from None
    if any(not w.strip() for w in words):
        raise ConfigError(f"{name}: an empty key would let anyone sign")
    return words


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def parse_choice(name: str, value: Any) -> str:
        if value not in choices:
            raise _bad(name, " or ".join(repr(c) for c in choices), value)
        return str(value)
    return parse_choice


def _prefix(name: str, value: Any) -> str:
    prefix = _str(name, value).rstrip("/")
    if not _PREFIX.fullmatch(prefix):
        raise _bad(name, "a URL path like /_fic", value)
    return prefix


def _origins(name: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        pairs = [w.partition("=") for w in re.split(r"[\s,]+", value) if w]
        if any(not sep for _, sep, _ in pairs):
            raise _bad(name, "name=url pairs", value)
        value = {k: v for k, _, v in pairs}
    if not isinstance(value, Mapping):
        raise _bad(name, "a mapping of origin name to base URL", value)
    origins = {}
    for origin, url in value.items():
        if not isinstance(origin, str) or not _ORIGIN_NAME.fullmatch(origin):
            raise ConfigError(f"{name}: origin name {origin!r} must match [a-z0-9_-]+")
        try:
            if not isinstance(url, str):
                raise ValueError("not a string")
            base = canonical_url(url)
        except ValueError:
            raise ConfigError(f"{name}: origin {origin!r} needs an absolute http(s) URL, "
                              f"got {url!r}") from None
        if "?" in base or "#" in url:
            raise ConfigError(f"{name}: origin {origin!r} base URL may not have a query or fragment")
        origins[origin] = base.rstrip("/")
    return origins


def _header_lines(name: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        lines = [line.partition(":") for line in value.splitlines() if line.strip()]
        if any(not sep for _, sep, _ in lines):
            raise _bad(name, "'Header: value' lines", "***")
        value = {k.strip(): v.strip() for k, _, v in lines}
    if not isinstance(value, Mapping):
        raise _bad(name, "a mapping of header name to value", "***")
    headers = {}
    for header, text in value.items():
        if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"{name}: {header!r} is not a valid header name")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise ConfigError(f"{name}: the value of {header!r} must be one line of text")
        headers[header] = text
    return headers


def _origin_headers(name: str, value: Any) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        raise _bad(name, "a mapping of origin name to headers", "***")
    return {origin: _header_lines(f"{name}.{origin}", lines) for origin, lines in value.items()}


# --- the option table -------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Option:
    name: str
    parse: Callable[[str, Any], Any]
    default: Any
    doc: str
    secret: bool = False


OPTIONS: tuple[Option, ...] = (
    Option("prefix", _prefix, "/_fic", "URL path under which images are served."),
    Option("backend", _choice("lmdb", "memory"), "lmdb",
           "Storage: 'lmdb' (one env per host, shared by workers) or 'memory' (per process)."),
    Option("cache_dir", _optional(_path), None, "Directory of the LMDB cache; required for lmdb."),
    Option("origins", _origins, {}, "Mapped origins: name -> base URL."),
    Option("origin_headers", _origin_headers, {},
           "Per-origin request headers (e.g. Authorization), never shown to clients.", secret=True),
    Option("forward_query", _bool, False,
           "Pass the query string to mapped origins (and key on it)."),
    # Cache budget: the LMDB map is sized from it, with room for B-tree overhead.
    Option("max_bytes", _size, GiB, "Upper bound of stored image bytes."),
    Option("max_entries", _optional(_count), None, "Optional upper bound of stored entries."),
    # LRU is what operators expect; s3fifo has the lower miss ratio on skewed traffic.
    Option("eviction", _choice("lru", "fifo", "ttl", "s3fifo"), "lru",
           "Eviction policy: lru, fifo, ttl (soonest expiry first) or s3fifo."),
    # 10 MiB covers any photo a page shows; larger bodies are refused while streaming.
    Option("max_image_bytes", _size, 10 * MiB, "Largest image fetched from an origin."),
    Option("allowed_types", _types, DEFAULT_TYPES, "Image Content-Types accepted from origins."),
    Option("connect_timeout", _duration, 3.0, "Origin connect timeout."),
    Option("read_timeout", _duration, 10.0, "Origin timeout between two reads."),
    # A slow-drip origin sends a byte per read_timeout forever; this cuts it.
    Option("total_timeout", _duration, 20.0, "Origin timeout for a whole fetch."),
    Option("retries", _count, 2, "Retries on connect errors and origin 502/503/504."),
    Option("max_redirects", _count, 3, "Redirects followed; one more is a 502."),
    Option("verify_tls", _bool, True, "Verify origin certificates (certifi or ca_bundle)."),
    Option("ca_bundle", _optional(_path), None, "CA bundle file instead of certifi's."),
    # Loopback, private, link-local... are refused unless listed here (docs/SECURITY.md).
    Option("allowed_networks", _networks, (), "CIDRs exempt from the address policy."),
    Option("default_ttl", _duration, 86400.0, "Freshness when the origin says nothing."),
    Option("min_ttl", _duration, 60.0, "Lower clamp of origin freshness."),
    Option("max_ttl", _duration, 30 * 86400.0, "Upper clamp of origin freshness."),
    Option("client_max_age", _duration, 86400.0, "Cap of Cache-Control max-age sent to clients."),
    Option("stale_while_revalidate", _duration, 60.0,
           "Serve an expired entry this long while one background fetch refreshes it."),
    Option("stale_if_error", _duration, 86400.0,
           "Serve an expired entry this long when the origin fails."),
    Option("negative_ttl", _duration, 30.0, "Remember an origin's 404/410 this long (0: never)."),
    # Their own budget: a crawl of missing paths must not push real images out.
    Option("negative_max_entries", _positive, 10_000,
           "Remembered 404/410s kept at most (a store of their own, never evicting images)."),
    Option("encryption_key", _optional(_secret_str), None,
           "Encrypt stored bodies (AES-GCM); needs fic-middleware[encryption].", secret=True),
    Option("encryption_key_file", _optional(_path), None, "File holding the encryption_key."),
    # Off unless set: without a token, {prefix}/_admin is a plain 404.
    Option("admin_token", _optional(_secret_str), None,
           "Bearer token of {prefix}/_admin (needs fic-middleware[admin]).", secret=True),
    Option("admin_token_file", _optional(_path), None, "File holding the admin_token."),
    # L2: hosts share fetched records through Redis; a dead Redis never fails a request.
    Option("redis_url", _optional(_secret_str), None,
           "redis://host:port/db of the shared tier (needs fic-middleware[redis]).", secret=True),
    # Anyone who can write to Redis must not be able to make every host serve their bytes.
    Option("redis_key", _optional(_secret_str), None,
           "HMAC key that authenticates records in the Redis tier (required with redis_url, "
           "unless encryption_key is set).", secret=True),
    Option("redis_key_file", _optional(_path), None, "File holding the redis_key."),
    # Remote mode ({prefix}/r/{sig}/{b64url}) is off until a key is configured.
    Option("signing_key", _optional(_secret_str), None, "HMAC key that signs and verifies remote URLs.",
           secret=True),
    Option("signing_keys", _secret_words, (),
           "More keys that verify (rotation); without signing_key the first one signs.",
           secret=True),
    Option("signing_key_file", _optional(_path), None,
           "File with signing keys, one per line, added after signing_key(s)."),
    Option("allowed_hosts", _hosts, (),
           "Remote URL hosts allowed: exact names or *.example.com (empty: any public host)."),
    # Off by default: a page of new images is a burst of misses from one client.
    Option("miss_rate", _optional(_float), None, "Misses per second per client address."),
    Option("miss_burst", _positive, 20, "Misses a client may make at once (token bucket size)."),
    Option("lock_timeout", _duration, 10.0,
           "How long a request waits for another one's fetch of the same image."),
    Option("max_inflight_fetches", _positive, 64, "Origin fetches at once per process; more get 503."),
    Option("trusted_proxies", _networks, (),
           "Proxies whose X-Forwarded-For names the client (REMOTE_ADDR otherwise)."),
    Option("config_file", _optional(_path), None, "TOML or INI file with a [fic] section."),
)
OPTION_BY_NAME = {o.name: o for o in OPTIONS}
_SECRET_MASK = "***"


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Validated, immutable options. Build it with :meth:`Config.load`."""

    prefix: str
    backend: str
    cache_dir: str | None
    origins: dict[str, str]
    origin_headers: dict[str, dict[str, str]]
    forward_query: bool
    max_bytes: int
    max_entries: int | None
    eviction: str
    max_image_bytes: int
    allowed_types: frozenset[str]
    connect_timeout: float
    read_timeout: float
    total_timeout: float
    retries: int
    max_redirects: int
    verify_tls: bool
    ca_bundle: str | None
    allowed_networks: tuple[Network, ...]
    default_ttl: float
    min_ttl: float
    max_ttl: float
    client_max_age: float
    stale_while_revalidate: float
    stale_if_error: float
    negative_ttl: float
    negative_max_entries: int
    encryption_key: str | None
    encryption_key_file: str | None
    admin_token: str | None
    admin_token_file: str | None
    redis_url: str | None
    redis_key: str | None
    redis_key_file: str | None
    signing_key: str | None
    signing_keys: tuple[str, ...]
    signing_key_file: str | None
    allowed_hosts: tuple[str, ...]
    miss_rate: float | None
    miss_burst: int
    lock_timeout: float
    max_inflight_fetches: int
    trusted_proxies: tuple[Network, ...]
    config_file: str | None

    def __repr__(self) -> str:
        fields = []
        for option in OPTIONS:
            value = getattr(self, option.name)
            if option.secret and value:
                value = _mask(value)
            fields.append(f"{option.name}={value!r}")
        return f"Config({', '.join(fields)})"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Config:
        """Merge defaults < config file < environment < keyword arguments, and validate."""
        environ = os.environ if environ is None else environ
        env = _from_environ(environ)
        unknown = sorted(set(kwargs) - set(OPTION_BY_NAME))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown option")
        config_file = _optional(_path)("config_file", kwargs.get("config_file",
                                                               env.get("config_file")))
        raw: dict[str, Any] = {o.name: o.default for o in OPTIONS}
        if config_file is not None:
            raw.update(read_file(config_file))
        raw.update(env)
        raw.update(kwargs)
        # Headers for one origin may come from one source while the rest come from another.
        raw["origin_headers"] = {
            **_mapping(raw.get("origin_headers")), **_mapping(env.get("origin_headers")),
            **_mapping(kwargs.get("origin_headers")),
        }
        values = {o.name: o.parse(o.name, raw[o.name]) for o in OPTIONS}
        _check(values)
        return cls(**values)

    @property
    def redis_auth_key(self) -> bytes:
        """The HMAC key of records in the Redis tier: redis_key, else derived from
        encryption_key (a fixed-purpose hash, so the two keys are never the same bytes)."""
        secret = self.redis_key or self.encryption_key or ""
        return hashlib.sha256(b"fic-middleware-redis-v1\0" + secret.encode()).digest()

    @property
    def verify_keys(self) -> tuple[str, ...]:
        """Every signing key, the one that signs first."""
        keys = (self.signing_key,) if self.signing_key else ()
        return keys + self.signing_keys + _read_keys(self.signing_key_file)


def _mask(value: Any) -> Any:
    """The shape of a secret without its content."""
    if isinstance(value, Mapping):
        return {k: _mask(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return tuple(_SECRET_MASK for _ in value)
    return _SECRET_MASK


def _mapping(value: Any) -> Mapping[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise _bad("origin_headers", "a mapping of origin name to headers", "***")
    return value


def _read_keys(path: str | None, option: str = "signing_key_file") -> tuple[str, ...]:
    """Non-empty lines of a secrets file."""
    if path is None:
        return ()
    try:
        with open(path, encoding="utf-8") as fh:
            return tuple(line.strip() for line in fh if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{option}: cannot read {path!r} ({exc})") from None


def _check(values: dict[str, Any]) -> None:
    """Rules that involve more than one option."""
    if values["backend"] == "lmdb":
        cache_dir = values["cache_dir"]
        if not cache_dir:
            raise ConfigError("cache_dir: required with backend 'lmdb'")
        try:
            os.makedirs(cache_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cache_dir: cannot create {cache_dir!r} ({exc.strerror})") from None
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            raise ConfigError(f"cache_dir: {cache_dir!r} is not writable")
    for origin in values["origin_headers"]:
        if origin not in values["origins"]:
            raise ConfigError(f"origin_headers: {origin!r} is not a configured origin")
    if not values["min_ttl"] <= values["max_ttl"]:
        raise ConfigError("min_ttl: must not exceed max_ttl")
    if values["max_image_bytes"] < 1:
        raise ConfigError("max_image_bytes: must be at least 1 byte")
    if values["max_bytes"] < values["max_image_bytes"]:
        raise ConfigError("max_bytes: must be at least max_image_bytes")
    for name in ("connect_timeout", "read_timeout", "total_timeout"):
        if values[name] <= 0:
            raise ConfigError(f"{name}: must be more than 0 seconds")
    if values["ca_bundle"] and not os.path.isfile(values["ca_bundle"]):
        raise ConfigError(f"ca_bundle: no such file {values['ca_bundle']!r}")
    if values["signing_key"] is not None and not values["signing_key"].strip():
        raise ConfigError("signing_key: must not be empty")
    _read_keys(values["signing_key_file"])  # fail now, not on the first request
    for secret in ("encryption_key", "admin_token", "redis_key"):
        if values[f"{secret}_file"]:
            keys = _read_keys(values[f"{secret}_file"], f"{secret}_file")
            if len(keys) != 1:
                raise ConfigError(f"{secret}_file: expected one secret on one line")
            values[secret] = keys[0]
        if values[secret] == "":
            raise ConfigError(f"{secret}: must not be empty")
    if values["admin_token"]:
        require("prometheus_client", "admin", "admin_token")
    if values["redis_url"]:
        if not values["redis_key"] and not values["encryption_key"]:
            raise ConfigError("redis_key: required with redis_url (or set encryption_key): "
                              "records from Redis are authenticated with it")
        if not values["redis_url"].startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("redis_url: expected redis://, rediss:// or unix://, got '***'")
        require("redis", "redis", "redis_url")
    if values["encryption_key"]:
        require("cryptography.hazmat.primitives.ciphers.aead", "encryption", "encryption_key")


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """``FIC_<NAME>`` for every option; ``FIC_ORIGIN_HEADERS_<ORIGIN>`` for one origin's headers."""
    found: dict[str, Any] = {}
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if not key.startswith("FIC_"):
            continue
        name = key[4:].lower()
        if name.startswith("origin_headers_"):
            headers[name[len("origin_headers_"):].replace("_", "-")] = value
        elif name in OPTION_BY_NAME and name != "origin_headers":
            found[name] = value
        else:
            raise ConfigError(f"{key}: unknown option in the environment")
    if headers:
        # Env names cannot hold '-': FIC_ORIGIN_HEADERS_MY_CDN serves origin my_cdn or my-cdn.
        origins = _origins("origins", found["origins"]) if "origins" in found else None
        found["origin_headers"] = {_env_origin(o, origins): v for o, v in headers.items()}
    return found


def _env_origin(spelled: str, origins: Mapping[str, str] | None) -> str:
    for candidate in (spelled.replace("-", "_"), spelled):
        if origins is None or candidate in origins:
            return candidate
    return spelled


def read_file(path: str) -> dict[str, Any]:
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
    unknown = sorted(set(values) - set(OPTION_BY_NAME) - {"config_file"})
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


def file_options(items: Mapping[str, Any], environ: Mapping[str, str] | None = None
                 ) -> dict[str, Any]:
    """Options from an INI-style section (paste, Pyramid settings) as keyword options:
    ``origin_headers.<origin>`` keys folded, and the options the environment sets left out,
    so that the environment beats the file as it does for ``config_file``."""
    environ = os.environ if environ is None else environ
    in_env = {key[4:].lower() for key in environ if key.startswith("FIC_")}
    options = {name: value for name, value in from_ini(items).items() if name not in in_env}
    if "origin_headers" in options:
        # FIC_ORIGIN_HEADERS_<ORIGIN> replaces that one origin's headers (env names have no '-').
        options["origin_headers"] = {
            origin: headers for origin, headers in options["origin_headers"].items()
            if f"origin_headers_{origin.replace('-', '_')}" not in in_env}
    return options
