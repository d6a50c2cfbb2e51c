"""How long an origin's response may be served: RFC 9111 freshness, RFC 5861 stale windows,
and the operator's bounds, as one value computed when a response is stored.

The rules, in the order they apply (docs/CACHING.md explains them for operators):

1. ``no-store`` or ``private`` (any casing, RFC 9111 §5.2): not stored.
2. The origin's lifetime: ``s-maxage`` over ``max-age`` over ``Expires - Date``, else
   ``default_ttl`` (§4.2.1). An unreadable value of any of them means "stale at once"
   (§4.2.1: "caches are encouraged to consider responses that have invalid freshness
   information to be stale"); of duplicated directives the first counts.
3. The operator's bounds: a positive lifetime is clamped to ``[min_ttl, max_ttl]``; a
   lifetime of 0 (``max-age=0``, a past ``Expires``) stays 0.
4. Age: the time the response already spent in caches upstream (``Age``, §4.2.3) is
   subtracted from the clamped lifetime. The apparent age from the origin's ``Date`` is not
   used: one origin with a slow clock would shorten every lifetime it sends. One rule, continuous in Age: a response whose Age
   is at least its lifetime arrives stale, whatever the numbers. It is stored (its
   validators make the next fetch a cheap conditional one) and may be served stale within
   the windows below.
5. Stale windows: ``stale-while-revalidate=N`` / ``stale-if-error=N`` from the origin
   (RFC 5861), each capped by the operator's option of the same name, which is also the
   default when the origin says nothing. ``must-revalidate``, ``proxy-revalidate``,
   ``s-maxage`` (which implies proxy-revalidate, §5.2.2.10) and ``no-cache`` close both
   windows: such a response is never served stale.
6. ``no-cache`` (§5.2.2.4): stored, but never fresh, so every use asks the origin
   (conditionally). This is kept apart from "aged to zero" (rule 4) by :attr:`no_cache`.
"""

from __future__ import annotations

import calendar
import math
import re
import time
from collections.abc import Mapping

# Longer than any max_ttl; keeps a 400-digit max-age a finite float (RFC 9111 §1.2.2 asks
# for at least 2**31 to stand for "too large to represent").
_LONGEST = float(2**53)
_DIGITS = frozenset("0123456789")
# RFC 9110 §5.6.7: the three HTTP-date forms a recipient must accept, and nothing else
# (RFC 9111 §5.3: any other Expires means "already expired"). Shapes checked first, with
# no nested quantifier; then strptime (C locale names) checks the values.
_HTTP_DATES = (
    (re.compile(r"[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT"),
     "%a, %d %b %Y %H:%M:%S GMT"),
    (re.compile(r"[A-Z][a-z]{5,8}, \d{2}-[A-Z][a-z]{2}-\d{2} \d{2}:\d{2}:\d{2} GMT"),
     "%A, %d-%b-%y %H:%M:%S GMT"),
    (re.compile(r"[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2} \d{4}"),
     "%a %b %d %H:%M:%S %Y"),
)


class Freshness:
    """The lifetime and stale windows of one stored response, in seconds from storing."""

    __slots__ = ("lifetime", "stale_while_revalidate", "stale_if_error", "no_cache",
                 "must_revalidate")

    def __init__(self, lifetime: float, stale_while_revalidate: float, stale_if_error: float,
                 no_cache: bool = False, must_revalidate: bool = False) -> None:
        self.lifetime = lifetime
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error
        self.no_cache = no_cache
        self.must_revalidate = must_revalidate

    def __repr__(self) -> str:
        return (f"Freshness(lifetime={self.lifetime}, swr={self.stale_while_revalidate}, "
                f"sie={self.stale_if_error}, no_cache={self.no_cache}, "
                f"must_revalidate={self.must_revalidate})")


class Policy:
    """The operator's freshness options (``default_ttl``, ``min_ttl``, ``max_ttl``,
    ``stale_while_revalidate``, ``stale_if_error``), read once."""

    __slots__ = ("default_ttl", "min_ttl", "max_ttl", "stale_while_revalidate", "stale_if_error")

    def __init__(self, default_ttl: float, min_ttl: float, max_ttl: float,
                 stale_while_revalidate: float, stale_if_error: float) -> None:
        self.default_ttl = default_ttl
        self.min_ttl = min_ttl
        self.max_ttl = max_ttl
        self.stale_while_revalidate = stale_while_revalidate
        self.stale_if_error = stale_if_error

    def freshness(self, cache_control: str | None, expires: str | None, date: str | None,
                  age: float, now: float) -> Freshness | None:
        """What an origin response with these headers earns; None if it may not be stored."""
        directives = parse_cache_control(cache_control)
        if "no-store" in directives or "private" in directives:
            return None
        no_cache = "no-cache" in directives
        must_revalidate = no_cache or any(
            d in directives for d in ("must-revalidate", "proxy-revalidate", "s-maxage"))
        if no_cache:
            lifetime = 0.0
        else:
            lifetime = max(0.0, self.clamp(_origin_lifetime(directives, expires, date, now,
                                                            self.default_ttl)) - age)
        if must_revalidate:
            return Freshness(lifetime, 0.0, 0.0, no_cache, True)
        return Freshness(lifetime,
                         _window(directives.get("stale-while-revalidate"), self.stale_while_revalidate),
                         _window(directives.get("stale-if-error"), self.stale_if_error))

    def clamp(self, lifetime: float) -> float:
        """Operator bounds on a positive lifetime; 0 (stale at once) stays 0."""
        if lifetime <= 0.0:
            return 0.0
        return float(min(max(lifetime, self.min_ttl), self.max_ttl))


def parse_cache_control(value: str | None) -> dict[str, str | None]:
    """Directive name (lower case) -> argument (unquoted) or None; the first of duplicates.

    RFC 9111 §5.2: names are case-insensitive; arguments may be tokens or quoted strings.
    A linear scan (no regular expression), as the header comes from the origin.
    """
    directives: dict[str, str | None] = {}
    if not value:
        return directives
    i, n = 0, len(value)
    while i < n:
        # name
        start = i
        while i < n and value[i] not in ",=":
            i += 1
        name = value[start:i].strip().lower()
        argument: str | None = None
        if i < n and value[i] == "=":
            i += 1
            while i < n and value[i] in " \t":
                i += 1
            if i < n and value[i] == '"':
                i += 1
                chars = []
                while i < n and value[i] != '"':
                    if value[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(value[i])
                    i += 1
                i += 1  # the closing quote
                argument = "".join(chars)
                while i < n and value[i] != ",":
                    i += 1
            else:
                start = i
                while i < n and value[i] != ",":
                    i += 1
                argument = value[start:i].strip()
        i += 1  # the comma
        if name and name not in directives:
            directives[name] = argument
    return directives


def http_date(value: str | None) -> float | None:
    """Seconds since the epoch of an RFC 9110 HTTP-date; None for anything else."""
    if not value:
        return None
    value = value.strip()
    for shape, layout in _HTTP_DATES:
        if shape.fullmatch(value):
            try:
                return float(calendar.timegm(time.strptime(value, layout)))
            except ValueError:  # a shape right, a value wrong (Feb 30, hour 25)
                return None
    return None


def delta_seconds(argument: str | None) -> float | None:
    """RFC 9111 §1.2.2 delta-seconds (ASCII digits only); None when it is not one."""
    if not argument or not _DIGITS.issuperset(argument):
        return None
    if len(argument.lstrip("0")) > 16:  # past 2**53: "too large", without a huge int()
        return _LONGEST
    return float(int(argument))


def _origin_lifetime(directives: Mapping[str, str | None], expires: str | None,
                     date: str | None, now: float, default: float) -> float:
    for name in ("s-maxage", "max-age"):
        if name in directives:
            seconds = delta_seconds(directives[name])
            return 0.0 if seconds is None else seconds  # unreadable: stale at once
    if expires is not None:
        expires_at = http_date(expires)
        if expires_at is None:  # an invalid Expires means "already expired" (§5.3)
            return 0.0
        # Expires is relative to the origin's clock (its Date), not ours.
        origin_now = http_date(date)
        base = origin_now if origin_now is not None else now
        return max(0.0, expires_at - base)
    return default


def _window(argument: str | None, operator: float) -> float:
    """An RFC 5861 window: the origin's value, capped by the operator's (also the default)."""
    seconds = delta_seconds(argument)
    if seconds is None or not math.isfinite(seconds):
        return operator
    return min(seconds, operator)
