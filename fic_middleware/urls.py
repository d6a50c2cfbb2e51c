"""URL canonicalisation: one spelling per resource, so one cache key per resource.

Scheme and host are lower-cased, the default port is dropped and percent-encoding is
normalised (RFC 3986 §6.2.2): escapes of unreserved characters are decoded, other escapes
get upper-case hex, reserved characters keep their escaped or literal form, and anything
else is encoded once as UTF-8.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from urllib.parse import quote, urlsplit

_DEFAULT_PORTS = {"http": 80, "https": 443}
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
# RFC 3986 pchar without the unreserved set (quote() never encodes unreserved characters).
PATH_SAFE = "/!$&'()*+,;=:@"
_QUERY_SAFE = PATH_SAFE + "?"
_ESCAPE = re.compile(r"(%[0-9A-Fa-f]{2})")
_HOST_CHARS = re.compile(r"[a-z0-9._:-]*")
# A DNS label (RFC 1035 §2.3.4: 1 to 63 octets; underscores occur in real names); a whole
# name is at most 253 characters without its root dot.
_LABEL = re.compile(r"[a-z0-9_-]{1,63}")
_MAX_NAME = 253


def _normalize(text: str, safe: str, encoding: str = "utf-8") -> str:
    out = []
    for i, token in enumerate(_ESCAPE.split(text)):
        if i % 2:  # an escape
            char = chr(int(token[1:], 16))
            out.append(char if char in _UNRESERVED else token.upper())
        elif token:
            out.append(quote(token.encode(encoding), safe=safe))
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4: what urllib3 and every server do to the path before using it."""
    output: list[str] = []
    segments = path.split("/")
    for i, segment in enumerate(segments):
        last = i == len(segments) - 1
        if segment == "..":
            if len(output) > 1:
                output.pop()
            if last:
                output.append("")
        elif segment == ".":
            if last:
                output.append("")
        else:
            output.append(segment)
    return "/".join(output)


def canonical_url(url: str) -> str:
    """Return the canonical form of an absolute http(s) URL.

    Raises ValueError for anything that is not an absolute http(s) URL with a host,
    or that carries userinfo or backslashes (``user@host`` tricks are never targets).
    """
    if "\\" in url or any(ord(c) < 0x21 for c in url):
        raise ValueError("URL contains backslashes, spaces or control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError("not an http(s) URL")
    if "@" in parts.netloc:
        raise ValueError("URL may not contain userinfo")
    if not parts.hostname:
        raise ValueError("URL has no host")
    host = host_to_ascii(parts.hostname)
    if "[" in parts.netloc and ":" not in host:
        raise ValueError("only an IPv6 address goes in brackets")
    port = parts.port  # raises ValueError for a bad port
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc = f"{netloc}:{port}"
    path = _remove_dot_segments(_normalize(parts.path, PATH_SAFE)) or "/"
    query = f"?{_normalize(parts.query, _QUERY_SAFE)}" if parts.query else ""
    return f"{scheme}://{netloc}{path}{query}"


def host_to_ascii(host: str) -> str:
    """Lower-case ASCII form of a host name (IDNA for non-ASCII names), checked whole.

    Look-alike Unicode names become their xn-- form, so they never equal the ASCII name
    they imitate; percent signs and other characters no host name has are refused. The
    root label's dot goes ("example.com." is "example.com"). Empty labels, labels over 63
    characters and names over 253 are refused here, as ValueError, rather than later by
    the resolver's IDNA codec (a UnicodeError far from any status).
    """
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError as exc:
            raise ValueError("invalid international host name") from exc
    if _HOST_CHARS.fullmatch(host) is None:
        raise ValueError("invalid characters in the host name")
    if ":" in host:  # an IPv6 literal, its brackets already taken off by urlsplit
        ipaddress.IPv6Address(host)  # raises ValueError
        return host
    if len(host) > _MAX_NAME or not all(_LABEL.fullmatch(label) for label in host.split(".")):
        raise ValueError("invalid host name: labels are 1 to 63 characters, names at most 253")
    return host


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """``allowed_hosts``: exact names, or ``*.example.com`` for names below it (label
    boundary: not ``evilexample.com``, and not ``example.com`` itself). ``host`` is in
    :func:`host_to_ascii` form, as the patterns are."""
    for pattern in patterns:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def quote_wsgi_path(path: str) -> str:
    """Encode a decoded WSGI path (latin-1 str of raw bytes) in canonical form."""
    return quote(path.encode("latin-1"), safe=PATH_SAFE)


def normalize_query(query: str) -> str:
    """Canonical form of a WSGI QUERY_STRING (still percent-encoded; raw bytes as latin-1)."""
    return _normalize(query, _QUERY_SAFE, "latin-1")
