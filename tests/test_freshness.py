"""The freshness rules (fic_middleware.freshness): RFC 9111 directives, RFC 5861 windows,
the operator's bounds and the one Age rule (issue 11, items 1, 3 and 4)."""

from __future__ import annotations

import pytest

from fic_middleware.freshness import Freshness, Policy, delta_seconds, http_date, parse_cache_control

NOW = 1_800_000_000.0
# default_ttl 555 s, min_ttl 60 s, max_ttl 1 day, swr 60 s, sie 1 day
POLICY = Policy(555.0, 60.0, 86400.0, 60.0, 86400.0)
UNBOUNDED = Policy(555.0, 0.0, 10**9, 60.0, 86400.0)


def fresh(cache_control: str | None, expires: str | None = None, date: str | None = None,
          age: float = 0.0, policy: Policy = UNBOUNDED) -> Freshness | None:
    return policy.freshness(cache_control, expires, date, age, NOW)


def lifetime(cache_control: str | None, **kwargs: object) -> float | None:
    result = fresh(cache_control, **kwargs)  # type: ignore[arg-type]
    return None if result is None else result.lifetime


@pytest.mark.parametrize("cache_control, expires, date, expected", [
    pytest.param("max-age=100", None, None, 100, id="max-age"),
    pytest.param("max-age=100, s-maxage=50", None, None, 50, id="s-maxage wins (shared cache)"),
    pytest.param("public, max-age=0", None, None, 0, id="max-age=0"),
    pytest.param("no-cache", None, None, 0, id="no-cache: store, always revalidate"),
    pytest.param("no-store", None, None, None, id="no-store"),
    pytest.param("private, max-age=100", None, None, None, id="private"),
    pytest.param(None, "Thu, 01 Jan 2026 00:01:40 GMT", "Thu, 01 Jan 2026 00:00:00 GMT", 100,
                 id="Expires minus the origin's Date"),
    pytest.param("max-age=7", "Thu, 01 Jan 2026 00:01:40 GMT", "Thu, 01 Jan 2026 00:00:00 GMT", 7,
                 id="max-age beats Expires"),
    pytest.param(None, "0", None, 0, id="invalid Expires is already expired"),
    pytest.param(None, None, None, 555, id="nothing said: default"),
    pytest.param("max-age=abc", None, None, 0, id="unreadable max-age: stale at once"),
    pytest.param("max-age=-5", None, None, 0, id="negative max-age: stale at once"),
    pytest.param("max-age=1.5", None, None, 0, id="fractional max-age: stale at once"),
    pytest.param("max-age=²", None, None, 0, id="non-ASCII digit: stale at once"),
    pytest.param('max-age="30"', None, None, 30, id="quoted argument"),
    pytest.param("max-age=30, max-age=5000", None, None, 30, id="duplicates: the first counts"),
    pytest.param("max-age=" + "9" * 400, None, None, 10**9, id="huge: max_ttl"),
    pytest.param("max-age=" + "0" * 400 + "7", None, None, 7, id="leading zeros"),
])
def test_origin_lifetime(cache_control: str | None, expires: str | None, date: str | None,
                         expected: float | None) -> None:
    assert lifetime(cache_control, expires=expires, date=date) == expected


@pytest.mark.parametrize("cache_control", [
    pytest.param("Private", id="Private"),
    pytest.param("PRIVATE, max-age=60", id="PRIVATE"),
    pytest.param("NO-STORE", id="NO-STORE"),
    pytest.param("No-Store, max-age=60", id="No-Store"),
])
def test_directive_names_are_case_insensitive_for_storing(cache_control: str) -> None:
    assert fresh(cache_control) is None


@pytest.mark.parametrize("cache_control, expected", [
    pytest.param("Max-Age=5", 5, id="Max-Age"),
    pytest.param("MAX-AGE=5", 5, id="MAX-AGE"),
    pytest.param("S-MaxAge=7, max-age=100", 7, id="S-MaxAge"),
    pytest.param("No-Cache, max-age=100", 0, id="No-Cache"),
])
def test_directive_names_are_case_insensitive_for_lifetime(cache_control: str, expected: float) -> None:
    assert lifetime(cache_control) == expected


@pytest.mark.parametrize("cache_control", [
    pytest.param("Must-Revalidate, max-age=60", id="Must-Revalidate"),
    pytest.param("PROXY-REVALIDATE, max-age=60", id="PROXY-REVALIDATE"),
    pytest.param("No-Cache", id="No-Cache"),
    pytest.param("s-maxage=60", id="s-maxage implies proxy-revalidate"),
])
def test_revalidate_directives_close_both_stale_windows(cache_control: str) -> None:
    result = fresh(cache_control)
    assert result is not None and result.must_revalidate
    assert (result.stale_while_revalidate, result.stale_if_error) == (0, 0)


def test_no_cache_is_not_the_same_as_aged_to_zero() -> None:
    no_cache = fresh("no-cache")
    aged = fresh("max-age=60", age=60)
    assert no_cache is not None and aged is not None
    assert no_cache.lifetime == aged.lifetime == 0
    assert no_cache.no_cache and not aged.no_cache
    assert aged.stale_while_revalidate == 60  # an aged response may still be served stale


@pytest.mark.parametrize("cache_control, swr, sie", [
    pytest.param("max-age=10", 60, 86400, id="origin silent: the operator's values"),
    pytest.param("max-age=10, stale-while-revalidate=5", 5, 86400, id="origin swr below the cap"),
    pytest.param("max-age=10, Stale-While-Revalidate=600", 60, 86400, id="origin swr capped"),
    pytest.param("max-age=10, stale-if-error=30", 60, 30, id="origin sie below the cap"),
    pytest.param("max-age=10, stale-if-error=0", 60, 0, id="origin sie=0: no bridging"),
    pytest.param("max-age=10, stale-if-error=oops", 60, 86400, id="unreadable: the default"),
])
def test_rfc5861_windows_within_the_operator_caps(cache_control: str, swr: float, sie: float) -> None:
    result = fresh(cache_control)
    assert result is not None
    assert (result.stale_while_revalidate, result.stale_if_error) == (swr, sie)


# --- the one Age rule -------------------------------------------------------------------------

@pytest.mark.parametrize("max_age, age, expected", [
    pytest.param(60, 60, 0, id="aged exactly to its lifetime: stale"),
    pytest.param(61, 60, 1, id="one second left: one second, not min_ttl"),
    pytest.param(10, 5, 55, id="short lifetime raised to min_ttl, then aged"),
    pytest.param(30, 100, 0, id="older than its lifetime: stale"),
    pytest.param(0, 0, 0, id="max-age=0 is not raised to min_ttl"),
])
def test_age_is_subtracted_after_the_operator_bounds(max_age: int, age: float, expected: float) -> None:
    assert lifetime(f"max-age={max_age}", age=age, policy=POLICY) == expected


def test_lifetime_shrinks_with_age_by_exactly_the_age() -> None:
    """No jump anywhere: one more second of Age is one second less of freshness, down to 0."""
    for max_age in (1, 30, 59, 60, 61, 120):
        previous = None
        for age in range(0, 200):
            current = lifetime(f"max-age={max_age}", age=float(age), policy=POLICY)
            assert current is not None
            if previous is not None:
                assert previous - current == (1 if previous > 0 else 0), (max_age, age)
            previous = current


# --- the parser -------------------------------------------------------------------------------

@pytest.mark.parametrize("header, expected", [
    pytest.param("", {}, id="empty"),
    pytest.param("public, Max-Age=5", {"public": None, "max-age": "5"}, id="names lower-cased"),
    pytest.param('no-cache="Set-Cookie, X", max-age=3', {"no-cache": "Set-Cookie, X", "max-age": "3"},
                 id="quoted argument with a comma"),
    pytest.param('a="x\\"y", b', {"a": 'x"y', "b": None}, id="quoted-pair"),
    pytest.param(" , ,max-age=1,, ", {"max-age": "1"}, id="empty members"),
    pytest.param('a="unterminated', {"a": "unterminated"}, id="unterminated quote"),
])
def test_parse_cache_control(header: str, expected: dict[str, str | None]) -> None:
    assert parse_cache_control(header) == expected


@pytest.mark.parametrize("argument, expected", [
    ("0", 0.0), ("17", 17.0), ("", None), (None, None), ("1e3", None), ("+5", None), ("٣", None),
])
def test_delta_seconds(argument: str | None, expected: float | None) -> None:
    assert delta_seconds(argument) == expected


@pytest.mark.parametrize("value, expected", [
    pytest.param("Sun, 06 Nov 1994 08:49:37 GMT", 784111777.0, id="IMF-fixdate"),
    pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", 784111777.0, id="rfc850"),
    pytest.param("Sun Nov  6 08:49:37 1994", 784111777.0, id="asctime"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 UTC", None, id="UTC is not GMT"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 AEST", None, id="another zone"),
    pytest.param("Sun, 06 Nov 94 08:49:37 GMT", None, id="two-digit year in IMF"),
    pytest.param("Sun 06 Nov 1994 08:49:37 GMT", None, id="no comma"),
    pytest.param("Sun, 06-Nov-1994 08:49:37 GMT", None, id="dashes in IMF"),
    pytest.param("Sun, 06 Nov 1994 8:49:37 GMT", None, id="one-digit hour"),
    pytest.param("Sun, 31 Feb 1994 08:49:37 GMT", None, id="no such day"),
    pytest.param("0", None, id="zero"),
    pytest.param("", None, id="empty"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT", None,
                 id="two Expires lines joined"),
])
def test_http_date_takes_the_three_rfc9110_forms_only(value: str, expected: float | None) -> None:
    assert http_date(value) == expected


def test_an_expires_in_another_form_is_already_expired() -> None:
    assert lifetime(None, expires="Sun, 06 Nov 2094 08:49:37 UTC") == 0
