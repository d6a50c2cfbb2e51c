"""responses: the values the WSGI adapter sends (docs/RESPONSES.md), without a server."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from fic_middleware import responses
from fic_middleware.errors import (
    MethodNotAllowed, NotFound, OriginTimeout, Overloaded, RequestError, TooManyRequests,
)
from fic_middleware.record import NO_CACHE, Entry

NOW = 1_800_000_000.0
BODY = b"0123456789"


def entry(flags: int = 0) -> Entry:
    return Entry(BODY, "image/png", '"e1"', "Wed, 01 Jan 2025 00:00:00 GMT", None, NOW - 5,
                 NOW + 100, flags)


@pytest.mark.parametrize(("exc", "code", "extra"), [
    pytest.param(NotFound("no"), 404, None, id="404"),
    pytest.param(MethodNotAllowed("no"), 405, ("Allow", "GET, HEAD"), id="405 allow"),
    pytest.param(TooManyRequests("slow down", retry_after=3), 429, ("Retry-After", "3"),
                 id="429 retry-after"),
    pytest.param(Overloaded("busy", 1), 503, ("Retry-After", "1"), id="503 retry-after"),
    pytest.param(OriginTimeout("late"), 504, None, id="504"),
    pytest.param(RequestError("internal error"), 500, None, id="500"),
])
def test_error_response_carries_its_status(exc: RequestError, code: int,
                                           extra: tuple[str, str] | None) -> None:
    response = responses.error_response(exc)
    assert response.code == code and response.status.startswith(f"{code} ")
    assert ("Cache-Control", "no-store") in response.headers
    assert extra is None or extra in response.headers


@pytest.mark.parametrize(("flags", "cacheable", "cache_control"), [
    pytest.param(0, True, "public, max-age=100", id="fresh"),
    pytest.param(NO_CACHE, True, "public, no-cache", id="origin no-cache"),
    pytest.param(0, False, "no-store", id="not storable"),
])
def test_image_response_cache_control(flags: int, cacheable: bool, cache_control: str) -> None:
    response = responses.image_response(entry(flags), responses.HIT, NOW, 3600, cacheable)
    assert dict(response.headers)["Cache-Control"] == cache_control


def test_client_max_age_caps_max_age() -> None:
    response = responses.image_response(entry(), responses.HIT, NOW, 10)
    assert dict(response.headers)["Cache-Control"] == "public, max-age=10"


def test_not_modified_drops_the_body_headers() -> None:
    response = responses.not_modified(responses.image_response(entry(), responses.HIT, NOW, 60))
    names = {name for name, _ in response.headers}
    assert response.code == HTTPStatus.NOT_MODIFIED and response.body == b""
    assert not names & {"Content-Type", "Content-Length"} and "ETag" in names


@pytest.mark.parametrize(("header", "code", "body"), [
    pytest.param("bytes=2-4", 206, b"234", id="closed range"),
    pytest.param("bytes=7-", 206, b"789", id="open range"),
    pytest.param("bytes=-2", 206, b"89", id="suffix"),
    pytest.param("bytes=20-", 416, b"range not satisfiable\n", id="past the end"),
    pytest.param("bytes=0-1,3-4", 200, BODY, id="several ranges: whole"),
    pytest.param("items=0-1", 200, BODY, id="other unit: whole"),
])
def test_ranges(header: str, code: int, body: bytes) -> None:
    response = responses.ranged(responses.image_response(entry(), responses.HIT, NOW, 60),
                                header, None)
    assert (response.code, response.body) == (code, body)


@pytest.mark.parametrize(("inm", "ims", "matches"), [
    pytest.param('"e1"', None, True, id="etag"),
    pytest.param('W/"e1"', None, True, id="weak etag"),
    pytest.param('"other"', "Thu, 01 Jan 2026 00:00:00 GMT", False, id="etag wins over date"),
    pytest.param(None, "Thu, 01 Jan 2026 00:00:00 GMT", True, id="not modified since"),
    pytest.param(None, "Mon, 01 Jan 2024 00:00:00 GMT", False, id="modified since"),
])
def test_conditional_requests(inm: str | None, ims: str | None, matches: bool) -> None:
    assert responses.is_not_modified(entry(), inm, ims) is matches


def test_a_hit_response_is_built_once_per_second() -> None:
    e = entry()
    assert responses.hit_response(e, NOW, 60) is responses.hit_response(e, NOW + 0.5, 60)
    assert responses.hit_response(e, NOW, 60) is not responses.hit_response(e, NOW + 1, 60)
