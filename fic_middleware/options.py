"""The value parsers behind every option, and :func:`option`, which declares one.

Each parser takes ``(option name, raw value)`` from any source (a keyword argument, an
environment variable, an INI/TOML value) and returns the parsed value, or raises a
:class:`ConfigError` that names the option and the value. ``bool`` is refused where a number
is expected: ``True`` must not silently mean 1 byte or 1 second.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from .errors import ConfigError
from .imagetypes import KNOWN_TYPES, canonical_type
from .urls import canonical_url, host_to_ascii

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Parser = Callable[[str, Any], Any]
P = TypeVar("P", bound=Parser)
_KINDS: dict[Parser, str] = {}


def _kind(kind: str) -> Callable[[P], P]:
    """Register what a parser reads, for the docs and the typed keyword arguments."""
    def register(parse: P) -> P:
        _KINDS[parse] = kind
        return parse
    return register


def kind_of(parse: Parser) -> str:
    """``"size"``, ``"duration"``, ``"list"``...; ``"size?"`` when it may be None."""
    return _KINDS.get(parse, "string")

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
# Not in a field value we send (RFC 9110 §5.5): controls other than tab, DEL, C1 controls.
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f-\x9f]")
_PREFIX = re.compile(r"(/[A-Za-z0-9._~!$&'()*+,;=:@-]+)+")
# A URL's userinfo (RFC 3986 §3.2.1), up to the last '@' of the word: a password may hold a
# raw '/' or '@'. One quantifier, no nesting: linear per '//'.
_USERINFO = re.compile(r"//[^\s,]*@")
_LARGEST = float(2**53)
_DIGITS = re.compile(r"\s*[0-9]{1,18}\s*")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


# --- value parsers: (option name, raw value) -> parsed value --------------------------------

def bad(name: str, expected: str, value: Any) -> ConfigError:
    return ConfigError(f"{name}: expected {expected}, got {value!r}")


@_kind("string")
def string(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad(name, "a string", value)
    return value


@_kind("path")
def path(name: str, value: Any) -> str:
    path_ = string(name, value)
    if "\0" in path_:
        raise bad(name, "a file or directory path", value)
    return path_


@_kind("bool")
def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise bad(name, "true or false", value)


def _number_with_unit(name: str, value: Any, units: Mapping[str, float], expected: str) -> float:
    # bool is an int subclass: True must not silently mean 1 byte or 1 second.
    if isinstance(value, bool):
        raise bad(name, expected, value)
    try:
        if isinstance(value, (int, float)):
            number_ = float(value)
        elif isinstance(value, str) and (m := _NUMBER_WITH_UNIT.fullmatch(value)):
            unit = m.group(2).lower()
            if unit not in units:
                raise bad(name, expected, value)
            number_ = float(m.group(1)) * units[unit]
        else:
            raise bad(name, expected, value)
    except OverflowError:
        raise bad(name, expected, value) from None
    # NaN fails both comparisons; sizes and durations beyond 2**53 are typos, not settings.
    if not 0 <= number_ <= _LARGEST:
        raise bad(name, expected, value)
    return number_


@_kind("size")
def size(name: str, value: Any) -> int:
    return int(_number_with_unit(name, value, _SIZE_UNITS, "a size like 10MiB"))


@_kind("duration")
def duration(name: str, value: Any) -> float:
    return _number_with_unit(name, value, _DURATION_UNITS, "a duration like 30s, 5m or 1d")


@_kind("int")
def count(name: str, value: Any) -> int:
    if isinstance(value, str) and _DIGITS.fullmatch(value):  # ASCII digits: not '²'
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise bad(name, "a whole number >= 0", value)


def optional(parse: Callable[[str, Any], Any]) -> Callable[[str, Any], Any]:
    def parse_optional(name: str, value: Any) -> Any:
        if value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"}):
            return None
        return parse(name, value)
    _KINDS[parse_optional] = kind_of(parse) + "?"
    return parse_optional


@_kind("list")
def words(name: str, value: Any) -> tuple[str, ...]:
    """A list option: a Python list/tuple, or a comma/whitespace-separated string."""
    if isinstance(value, str):
        return tuple(w for w in re.split(r"[\s,]+", value) if w)
    if isinstance(value, (list, tuple, set, frozenset)) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise bad(name, "a list of strings", value)


@_kind("list")
def types(name: str, value: Any) -> frozenset[str]:
    types_ = set()
    for word in words(name, value):
        canonical = canonical_type(word)
        if canonical not in KNOWN_TYPES:
            raise ConfigError(f"{name}: unsupported image type {word!r} "
                              f"(known: {', '.join(sorted(KNOWN_TYPES))})")
        types_.add(canonical)
    return frozenset(types_)


@_kind("list")
def networks(name: str, value: Any) -> tuple[Network, ...]:
    if isinstance(value, (list, tuple)):
        value = [str(v) if isinstance(v, (ipaddress.IPv4Network, ipaddress.IPv6Network)) else v
                 for v in value]
    try:
        return tuple(ipaddress.ip_network(w, strict=False) for w in words(name, value))
    except ValueError as exc:
        raise ConfigError(f"{name}: {exc}") from None


@_kind("number")
def number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise bad(name, "a number", value)
    try:
        number_ = float(value)
    except (TypeError, ValueError):
        raise bad(name, "a number", value) from None
    if not number_ >= 0 or number_ == float("inf"):
        raise bad(name, "a number >= 0", value)
    return number_


@_kind("int")
def positive(name: str, value: Any) -> int:
    count_ = count(name, value)
    if count_ < 1:
        raise bad(name, "a whole number >= 1", value)
    return count_


def prefix_length(bits: int) -> Callable[[str, Any], int]:
    def parse_prefix_length(name: str, value: Any) -> int:
        try:
            length = count(name, value)
        except ConfigError:
            length = -1
        if not 0 <= length <= bits:
            raise bad(name, f"a prefix length from 0 to {bits}", value)
        return length
    _KINDS[parse_prefix_length] = "int"
    return parse_prefix_length


@_kind("list")
def hosts(name: str, value: Any) -> tuple[str, ...]:
    """Exact host names or ``*.suffix`` patterns, lower-case ASCII (IDNA)."""
    hosts_ = []
    for word in words(name, value):
        wildcard = word.startswith("*.")
        host = word[2:] if wildcard else word
        try:
            ascii_host = host_to_ascii(host.strip("[]"))
        except ValueError:
            raise ConfigError(f"{name}: {word!r} is not a host name or *.suffix pattern") from None
        if not ascii_host or "*" in ascii_host:
            raise ConfigError(f"{name}: {word!r} is not a host name or *.suffix pattern")
        hosts_.append(f"*.{ascii_host}" if wildcard else ascii_host)
    return tuple(hosts_)


@_kind("string")
def secret_str(name: str, value: Any) -> str:
    if not isinstance(value, str):
        raise bad(name, "a string", "***")
    return value


@_kind("list")
def secret_words(name: str, value: Any) -> tuple[str, ...]:
    try:
        words_ = words(name, value)
    except ConfigError:
        raise bad(name, "a list of strings", "***") from None
    if any(not w.strip() for w in words_):
        raise ConfigError(f"{name}: an empty key would let anyone sign")
    return words_


def choice(*choices: str) -> Callable[[str, Any], str]:
    def parse_choice(name: str, value: Any) -> str:
        if value not in choices:
            raise bad(name, " or ".join(repr(c) for c in choices), value)
        return str(value)
    _KINDS[parse_choice] = "choice"
    return parse_choice


@_kind("path")
def url_prefix(name: str, value: Any) -> str:
    prefix = string(name, value).rstrip("/")
    if not _PREFIX.fullmatch(prefix):
        raise bad(name, "a URL path like /_fic", value)
    return prefix


@_kind("origins")
def origins(name: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        pairs = [w.partition("=") for w in re.split(r"[\s,]+", value) if w]
        if any(not sep for _, sep, _ in pairs):
            raise bad(name, "name=url pairs", value)
        value = {k: v for k, _, v in pairs}
    if not isinstance(value, Mapping):
        raise bad(name, "a mapping of origin name to base URL", value)
    origins_ = {}
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
        origins_[origin] = base.rstrip("/")
    return origins_


@_kind("headers")
def header_lines(name: str, value: Any) -> dict[str, str]:
    if isinstance(value, str):
        lines = [line.partition(":") for line in value.splitlines() if line.strip()]
        if any(not sep for _, sep, _ in lines):
            raise bad(name, "'Header: value' lines", "***")
        value = {k.strip(): v.strip() for k, _, v in lines}
    if not isinstance(value, Mapping):
        raise bad(name, "a mapping of header name to value", "***")
    headers = {}
    for header, text in value.items():
        if not isinstance(header, str) or not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"{name}: {header!r} is not a valid header name")
        if not isinstance(text, str) or any(c in text for c in "\r\n\0"):
            raise ConfigError(f"{name}: the value of {header!r} must be one line of text")
        headers[header] = text
    return headers


@_kind("origin_headers")
def origin_headers(name: str, value: Any) -> dict[str, dict[str, str]]:
    if not isinstance(value, Mapping):
        raise bad(name, "a mapping of origin name to headers", "***")
    return {origin: header_lines(f"{name}.{origin}", lines) for origin, lines in value.items()}


# Never replayed from an origin nor added by add_headers (docs/RESPONSES.md): cookies, the
# hop-by-hop fields of RFC 9110 §7.6.1 (and Proxy-*), Server, and the headers the middleware
# sets itself (its own ETag, Cache-Control, Age...; Vary and Content-Encoding describe what it
# serves, not what the origin sent).
HOP_BY_HOP = frozenset({"connection", "keep-alive", "te", "trailer", "transfer-encoding",
                        "upgrade"})
_NEVER_PASSED = frozenset({
    "set-cookie", "set-cookie2", "server", *HOP_BY_HOP, "content-type", "content-length",
    "etag", "cache-control", "age", "cache-status", "date", "x-content-type-options",
    "content-security-policy", "last-modified", "vary", "content-encoding", "content-range",
})


def never_passed(header: str) -> bool:
    """Whether ``header`` (any casing) is one the middleware never takes from elsewhere."""
    lower = header.lower()
    return lower in _NEVER_PASSED or lower.startswith("proxy-")


def _replayable(name: str, header: str) -> None:
    if never_passed(header):
        raise ConfigError(f"{name}: {header!r} is never replayed (cookies, hop-by-hop "
                          "headers, Server and the headers the middleware sets itself)")


@_kind("list")
def header_names(name: str, value: Any) -> tuple[str, ...]:
    """Origin response headers to replay: valid names, none of the never-replayed ones."""
    names = words(name, value)
    for header in names:
        if not _HEADER_NAME.fullmatch(header):
            raise ConfigError(f"{name}: {header!r} is not a valid header name")
        _replayable(name, header)
    return names


@_kind("headers")
def fixed_headers(name: str, value: Any) -> dict[str, str]:
    """Response headers added as they are: one line each, none the middleware sets itself."""
    headers = header_lines(name, value)
    for header, text in headers.items():
        _replayable(name, header)
        if _CONTROL.search(text):
            raise ConfigError(f"{name}: the value of {header!r} has a control character")
    return headers


def _web_origin(text: str) -> bool:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname) and port != 0 and \
        not (parts.path or parts.query or parts.fragment or "@" in parts.netloc)


@_kind("list")
def cors_origins(name: str, value: Any) -> tuple[str, ...]:
    """``*`` or exact web origins (RFC 6454 serialisation: scheme://host[:port]), lower-cased."""
    origins_ = []
    for word in words(name, value):
        if word == "*":
            origins_.append(word)
            continue
        if not _web_origin(word):
            raise ConfigError(f"{name}: expected '*' or an origin like https://app.example.com, "
                              f"got {word!r}")
        origins_.append(word.lower())
    if "*" in origins_ and len(origins_) > 1:
        raise ConfigError(f"{name}: '*' already allows every origin; list it alone")
    return tuple(origins_)


# --- declaring an option ------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Option:
    """One row of the option table: how to parse it, its default, what it is for."""

    name: str
    parse: Parser
    default: Any
    doc: str
    secret: bool = False
    kind: str = "string"  # see kind_of()
    group: str = "serving"  # where --help and the docs show it


def option(parse: Parser, default: Any, doc: str, *, secret: bool = False,
           group: str = "serving") -> Any:
    """A :class:`~fic_middleware.config.Config` field that is also a row of the option table;
    ``group`` is one of GROUPS (how --help and docs/CONFIGURATION.md sort it)."""
    if group not in GROUPS:
        raise ValueError(f"option group {group!r} is not one of {GROUPS}")
    return dataclasses.field(metadata={"option": (parse, default, doc, secret, group)})


GROUPS = ("cache", "origins and URLs", "origin fetches", "freshness", "serving")


def without_userinfo(text: str) -> str:
    """``text`` with the userinfo of any URL in it replaced by ``***``."""
    return _USERINFO.sub("//***@", text)


def shown_default(opt: Option) -> str:
    """An option's default as one would write it (``1GiB``, ``1d``, ``true``), or ''."""
    value = opt.default
    kind = opt.kind.rstrip("?")
    if value is None or value == () or value == {}:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if kind == "size":
        for unit, size in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
            if value % size == 0:
                return f"{value // size}{unit}"
        return str(value)
    if kind == "duration":
        for unit, seconds in (("d", 86400), ("h", 3600), ("m", 60)):
            if value >= seconds and value % seconds == 0:
                return f"{int(value // seconds)}{unit}"
        return f"{value:g}s"
    if isinstance(value, (frozenset, tuple)):
        return ",".join(sorted(value))
    return str(value)
