"""The option table and the frozen :class:`Config` built from it.

:class:`Config` is the table: each field is declared once with its parser, default and doc
(:func:`options.option`), and everything else is derived from it: the keyword arguments
``FastImageCache`` takes (the ``Options`` TypedDict in :mod:`_typed_options`), ``FIC_*``
environment variables, INI/TOML keys, CLI flags and docs/CONFIGURATION.md
(``scripts/gen_docs``; tests check both stay in step).

Precedence: keyword arguments > environment > file > defaults. :meth:`Config.load` parses
every value, reads secret files, checks the rules between options (:mod:`validation`),
creates the cache directory and checks that the extras an option needs are installed: a
wrong value is a :class:`ConfigError` naming the option, at start-up, never on the first
request.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Mapping
from typing import Any

from . import options as o
from .errors import ConfigError
from .extras import require
from .imagetypes import DEFAULT_TYPES
from .options import GiB, MiB, Network, Option, option, without_userinfo
from .sources import env_option, from_environ, from_ini, read_file
from .validation import validate

_SECRET_MASK = "***"


@dataclasses.dataclass(frozen=True, slots=True)
class Config:
    """Validated, immutable options. Build it with :meth:`Config.load`."""

    prefix: str = option(o.url_prefix, "/_fic", "URL path under which images are served.", group="origins and URLs")
    backend: str = option(o.choice("lmdb", "memory"), "lmdb",
        "Storage: 'lmdb' (one env per host, shared by workers) or 'memory' (per process).", group="cache")
    cache_dir: str | None = option(o.optional(o.path), None,
        "Directory of the LMDB cache; required for lmdb.", group="cache")
    origins: dict[str, str] = option(o.origins, {}, "Mapped origins: name -> base URL.", group="origins and URLs")
    origin_headers: dict[str, dict[str, str]] = option(o.origin_headers, {},
        "Per-origin request headers (e.g. Authorization), never shown to clients.", secret=True,
        group="origins and URLs")
    # What browsers need of an image besides its bytes; never cookies or what we set ourselves.
    pass_headers: tuple[str, ...] = option(o.header_names,
        ("Access-Control-Allow-Origin", "Timing-Allow-Origin", "Content-Disposition", "Link"),
        "Origin response headers stored with an image and replayed (Content-Disposition only "
        "when inline); never Set-Cookie, hop-by-hop headers, Server or the cache's own.")
    add_headers: dict[str, str] = option(o.fixed_headers, {},
        "Fixed headers added to every image response.")
    # Canvas and WebGL read pixels of a cross-origin image only with CORS (the Fetch standard).
    cors_origins: tuple[str, ...] = option(o.cors_origins, (),
        "Web origins allowed to read images cross-origin: '*' or exact origins like "
        "https://app.example.com (answered on hits, and to preflights).")
    forward_query: bool = option(o.boolean, False,
        "Pass the query string to mapped origins (and key on it).", group="origins and URLs")
    # Cache budget: the LMDB map is sized from it, with room for B-tree overhead.
    max_bytes: int = option(o.size, GiB, "Upper bound of stored image bytes.", group="cache")
    max_entries: int | None = option(o.optional(o.count), None,
        "Optional upper bound of stored entries.", group="cache")
    # LRU is what operators expect; s3fifo has the lower miss ratio on skewed traffic.
    eviction: str = option(o.choice("lru", "fifo", "ttl", "s3fifo"), "lru",
        "Eviction policy: lru, fifo, ttl (soonest expiry first) or s3fifo.", group="cache")
    # 10 MiB covers any photo a page shows; larger bodies are refused while streaming.
    max_image_bytes: int = option(o.size, 10 * MiB, "Largest image fetched from an origin.", group="origin fetches")
    allowed_types: frozenset[str] = option(o.types, DEFAULT_TYPES,
        "Image Content-Types accepted from origins.", group="origin fetches")
    connect_timeout: float = option(o.duration, 3.0, "Origin connect timeout.", group="origin fetches")
    read_timeout: float = option(o.duration, 10.0, "Origin timeout between two reads.", group="origin fetches")
    # A slow-drip origin sends a byte per read_timeout forever; this cuts it.
    total_timeout: float = option(o.duration, 20.0, "Origin timeout for a whole fetch.", group="origin fetches")
    retries: int = option(o.count, 2, "Retries on connect errors and origin 502/503/504.", group="origin fetches")
    max_redirects: int = option(o.count, 3, "Redirects followed; one more is a 502.", group="origin fetches")
    # nginx's max_fails is 1 per worker; 5 in a row for the whole host rides out a blip.
    breaker_failures: int = option(o.count, 5,
        "Consecutive failures of an origin host that open its circuit (0: never).", group="origin fetches")
    # nginx's fail_timeout is 10s; 30s lets a restarting origin come back before a probe.
    breaker_cooldown: float = option(o.duration, 30.0,
        "How long an open circuit fails misses at once before one request probes.", group="origin fetches")
    verify_tls: bool = option(o.boolean, True, "Verify origin certificates (certifi or ca_bundle).", group="origin fetches")
    ca_bundle: str | None = option(o.optional(o.path), None, "CA bundle file instead of certifi's.", group="origin fetches")
    # Loopback, private, link-local... are refused unless listed here (docs/SECURITY.md).
    allowed_networks: tuple[Network, ...] = option(o.networks, (),
        "CIDRs exempt from the address policy.", group="origin fetches")
    default_ttl: float = option(o.duration, 86400.0, "Freshness when the origin says nothing.", group="freshness")
    min_ttl: float = option(o.duration, 60.0, "Lower clamp of origin freshness.", group="freshness")
    max_ttl: float = option(o.duration, 30 * 86400.0, "Upper clamp of origin freshness.", group="freshness")
    client_max_age: float = option(o.duration, 86400.0,
        "Cap of Cache-Control max-age sent to clients.", group="freshness")
    stale_while_revalidate: float = option(o.duration, 60.0,
        "Serve an expired entry this long while one background fetch refreshes it.", group="freshness")
    stale_if_error: float = option(o.duration, 86400.0,
        "Serve an expired entry this long when the origin fails.", group="freshness")
    negative_ttl: float = option(o.duration, 30.0,
        "Remember an origin's 404/410 this long (0: never).", group="freshness")
    # Their own budget: a crawl of missing paths must not push real images out.
    negative_max_entries: int = option(o.positive, 10_000,
        "Remembered 404/410s kept at most (a store of their own, never evicting images).", group="cache")
    encryption_key: str | None = option(o.optional(o.secret_str), None,
        "Encrypt stored bodies (AES-GCM); needs fic-middleware[encryption].", secret=True, group="cache")
    encryption_key_file: str | None = option(o.optional(o.path), None,
        "File holding the encryption_key.", group="cache")
    # Off unless set: without a token, {prefix}/_admin is a plain 404.
    admin_token: str | None = option(o.optional(o.secret_str), None,
        "Bearer token of {prefix}/_admin (needs fic-middleware[admin]).", secret=True)
    admin_token_file: str | None = option(o.optional(o.path), None, "File holding the admin_token.")
    # L2: hosts share fetched records through Redis; a dead Redis never fails a request.
    redis_url: str | None = option(o.optional(o.secret_str), None,
        "redis://host:port/db of the shared tier (needs fic-middleware[redis]).", secret=True)
    # Anyone who can write to Redis must not be able to make every host serve their bytes.
    redis_key: str | None = option(o.optional(o.secret_str), None,
        "HMAC key that authenticates records in the Redis tier (required with redis_url, "
        "unless encryption_key is set).", secret=True)
    redis_key_file: str | None = option(o.optional(o.path), None, "File holding the redis_key.")
    # Remote mode ({prefix}/r/{sig}/{b64url}) is off until a key is configured.
    signing_key: str | None = option(o.optional(o.secret_str), None,
        "HMAC key that signs and verifies remote URLs.", secret=True, group="origins and URLs")
    signing_keys: tuple[str, ...] = option(o.secret_words, (),
        "More keys that verify (rotation); without signing_key the first one signs.", secret=True, group="origins and URLs")
    signing_key_file: str | None = option(o.optional(o.path), None,
        "File with signing keys, one per line, added after signing_key(s).", group="origins and URLs")
    allowed_hosts: tuple[str, ...] = option(o.hosts, (),
        "Remote URL hosts allowed: exact names or *.example.com (empty: any public host).", group="origins and URLs")
    # Off by default: a page of new images is a burst of misses from one client.
    miss_rate: float | None = option(o.optional(o.number), None,
        "Misses per second per client network (client_ipv4_prefix, client_ipv6_prefix), "
        "counted for the whole host (every worker), or every host sharing redis_url.")
    miss_burst: int = option(o.positive, 20,
        "Misses a client may make at once (token bucket size).")
    # One IPv6 host owns a /64 and rotates addresses inside it (RFC 8981); IPv4 hosts one address.
    client_ipv4_prefix: int = option(o.prefix_length(32), 32,
        "IPv4 clients share a miss budget per network of this prefix length.")
    client_ipv6_prefix: int = option(o.prefix_length(128), 64,
        "IPv6 clients share a miss budget per network of this prefix length.")
    lock_timeout: float = option(o.duration, 10.0,
        "How long a request waits for another one's fetch of the same image.", group="origin fetches")
    max_inflight_fetches: int = option(o.positive, 64,
        "Origin fetches at once on this host (every worker); more get 503.",
        group="origin fetches")
    trusted_proxies: tuple[Network, ...] = option(o.networks, (),
        "Proxies whose X-Forwarded-For names the client (REMOTE_ADDR otherwise).")
    config_file: str | None = option(o.optional(o.path), None,
        "TOML or INI file with a [fic] section.", group="cache")

    def __repr__(self) -> str:
        fields = []
        for opt in OPTIONS:
            value = getattr(self, opt.name)
            if opt.secret and value:
                value = _mask(value)
            fields.append(f"{opt.name}={value!r}")
        return f"Config({', '.join(fields)})"

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **kwargs: Any) -> Config:
        """Merge defaults < config file < environment < keyword arguments, and validate."""
        try:
            return cls._load(os.environ if environ is None else environ, kwargs)
        except ConfigError as exc:
            # Whatever option or file the error quotes, URL credentials are never shown.
            message = str(exc)
            cleaned = without_userinfo(message)
            if cleaned == message:
                raise
            raise ConfigError(cleaned) from None

    @classmethod
    def _load(cls, environ: Mapping[str, str], kwargs: dict[str, Any]) -> Config:
        env = from_environ(environ, OPTION_NAMES)
        unknown = sorted(set(kwargs) - set(OPTION_NAMES))
        if unknown:
            raise ConfigError(f"{unknown[0]}: unknown option")
        config_file = o.optional(o.path)("config_file", kwargs.get("config_file",
                                                                  env.get("config_file")))
        raw: dict[str, Any] = {opt.name: opt.default for opt in OPTIONS}
        if config_file is not None:
            values = read_file(config_file, OPTION_NAMES)
            values.pop("config_file", None)
            raw.update(values)
        raw.update(env)
        raw.update(kwargs)
        # Headers for one origin may come from one source while the rest come from another.
        raw["origin_headers"] = {
            **_mapping(raw.get("origin_headers")), **_mapping(env.get("origin_headers")),
            **_mapping(kwargs.get("origin_headers")),
        }
        values = {opt.name: opt.parse(opt.name, raw[opt.name]) for opt in OPTIONS}
        _read_secret_files(values)
        validate(values)
        _prepare(values)
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


def _table() -> tuple[Option, ...]:
    rows = []
    for field in dataclasses.fields(Config):
        parse, default, doc, secret, group = field.metadata["option"]
        rows.append(Option(field.name, parse, default, doc, secret, o.kind_of(parse), group))
    return tuple(rows)


OPTIONS: tuple[Option, ...] = _table()
OPTION_BY_NAME = {opt.name: opt for opt in OPTIONS}
OPTION_NAMES = tuple(OPTION_BY_NAME)
# Options that need an optional dependency: (module, extra).
_EXTRAS = {
    "admin_token": ("prometheus_client", "admin"),
    "redis_url": ("redis", "redis"),
    "encryption_key": ("cryptography", "encryption"),
}


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
        raise o.bad("origin_headers", "a mapping of origin name to headers", "***")
    return value


def _read_keys(path: str | None, name: str = "signing_key_file") -> tuple[str, ...]:
    """Non-empty lines of a secrets file."""
    if path is None:
        return ()
    try:
        with open(path, encoding="utf-8") as fh:
            return tuple(line.strip() for line in fh if line.strip())
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{name}: cannot read {path!r} ({exc})") from None


def _read_secret_files(values: dict[str, Any]) -> None:
    """``*_file`` options: read now, so a missing file fails at start-up."""
    _read_keys(values["signing_key_file"])
    for secret in ("encryption_key", "admin_token", "redis_key"):
        if values[f"{secret}_file"]:
            keys = _read_keys(values[f"{secret}_file"], f"{secret}_file")
            if len(keys) != 1:
                raise ConfigError(f"{secret}_file: expected one secret on one line, "
                                  f"found {len(keys)}")
            values[secret] = keys[0]


def _prepare(values: Mapping[str, Any]) -> None:
    """What the options need of this machine: the cache directory, files, extras."""
    if values["backend"] == "lmdb":
        cache_dir = values["cache_dir"]
        try:
            os.makedirs(cache_dir, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"cache_dir: cannot create {cache_dir!r} ({exc.strerror})") from None
        if not os.access(cache_dir, os.W_OK | os.X_OK):
            raise ConfigError(f"cache_dir: {cache_dir!r} is not writable")
    if values["ca_bundle"] and not os.path.isfile(values["ca_bundle"]):
        raise ConfigError(f"ca_bundle: no such file {values['ca_bundle']!r}")
    for name, (module, extra) in _EXTRAS.items():
        if values[name]:
            require(module, extra, name)


def file_options(items: Mapping[str, Any], environ: Mapping[str, str] | None = None
                 ) -> dict[str, Any]:
    """Options from an INI-style section (paste, Pyramid settings) as keyword options:
    ``origin_headers.<origin>`` keys folded, and the options the environment sets left out,
    so that the environment beats the file as it does for ``config_file``."""
    environ = os.environ if environ is None else environ
    in_env = {name for key in environ if (name := env_option(key, OPTION_NAMES)) is not None}
    options = {name: value for name, value in from_ini(items).items() if name not in in_env}
    if "origin_headers" in options:
        # FIC_ORIGIN_HEADERS_<ORIGIN> replaces that one origin's headers (env names have no '-').
        options["origin_headers"] = {
            origin: headers for origin, headers in options["origin_headers"].items()
            if f"origin_headers_{origin.replace('-', '_')}" not in in_env}
    return options
