"""``fic_url``: one place builds image URLs for every integration (pure, no server)."""

from __future__ import annotations

import pytest

from fic_middleware import sign_url
from fic_middleware.config import Config
from fic_middleware.urlbuilder import UrlBuilder

CDN = "https://images.example.com/media"


def builder(**options: object) -> UrlBuilder:
    options.setdefault("backend", "memory")
    options.setdefault("origins", {"cdn": CDN, "thumbs": f"{CDN}/thumbs"})
    return UrlBuilder(Config.load(environ={}, **options))


@pytest.mark.parametrize(("target", "origin", "expected"), [
    pytest.param("2024/cat.jpg", "cdn", "/_fic/o/cdn/2024/cat.jpg", id="origin argument"),
    pytest.param("/2024/cat.jpg", "cdn", "/_fic/o/cdn/2024/cat.jpg", id="leading slash"),
    pytest.param("my cat?.jpg", "cdn", "/_fic/o/cdn/my%20cat%3F.jpg", id="quoted"),
    pytest.param("100%.jpg", "cdn", "/_fic/o/cdn/100%25.jpg", id="percent is a character"),
    pytest.param("chat/été.jpg", "cdn", "/_fic/o/cdn/chat/%C3%A9t%C3%A9.jpg", id="utf-8"),
    pytest.param("cdn/2024/cat.jpg", None, "/_fic/o/cdn/2024/cat.jpg", id="origin/path"),
    pytest.param(f"{CDN}/2024/cat.jpg", None, "/_fic/o/cdn/2024/cat.jpg", id="URL under an origin"),
    pytest.param("HTTPS://Images.Example.com:443/media/%7Ecat.jpg", None, "/_fic/o/cdn/~cat.jpg",
                 id="URL canonicalised first"),
    pytest.param(f"{CDN}/thumbs/cat.jpg", None, "/_fic/o/thumbs/cat.jpg", id="longest base wins"),
])
def test_mapped_urls(target: str, origin: str | None, expected: str) -> None:
    assert builder()(target, origin) == expected


def test_other_urls_are_signed_with_the_first_key() -> None:
    build = builder(signing_key="new", signing_keys=["old"])
    assert build("https://example.org/dog.png") == sign_url("https://example.org/dog.png", "new")


@pytest.mark.parametrize("target", [
    pytest.param(f"{CDN}/cat.jpg?w=100", id="query the mapped form would drop"),
    pytest.param(f"{CDN}/a%2Fb.jpg", id="encoded slash the mapped form refuses"),
])
def test_urls_under_an_origin_that_a_mapped_path_cannot_name_are_signed(target: str) -> None:
    assert builder(signing_key="k")(target) == sign_url(target, "k")


def test_query_kept_in_the_mapped_form_with_forward_query() -> None:
    assert builder(forward_query=True)(f"{CDN}/cat.jpg?w=100") == "/_fic/o/cdn/cat.jpg?w=100"


def test_signed_url_is_of_the_canonical_url() -> None:
    build = builder(signing_key="k")
    assert build("HTTPS://Example.ORG:443/dog.png") == sign_url("https://example.org/dog.png", "k")


def test_custom_prefix() -> None:
    assert builder(prefix="/img/")("cat.jpg", "cdn") == "/img/o/cdn/cat.jpg"


@pytest.mark.parametrize(("options", "target", "origin", "message"), [
    pytest.param({}, "cat.jpg", "nope", r"no origin named 'nope' \(origins: cdn, thumbs\)",
                 id="unknown origin"),
    pytest.param({}, "cat.jpg", None, "neither an absolute http", id="relative, no origin"),
    pytest.param({}, "nope/cat.jpg", None, "neither an absolute http", id="unknown origin/path"),
    pytest.param({}, "https://example.org/dog.png", None, "without a signing_key",
                 id="not mapped, no key"),
    pytest.param({"signing_key": "k"}, "ftp://example.org/dog.png", None, "not a usable http",
                 id="scheme"),
    pytest.param({}, "../secret.jpg", "cdn", "path traversal", id="traversal"),
    pytest.param({}, "a\\b.jpg", "cdn", "backslashes", id="backslash"),
    pytest.param({"signing_key": "k", "allowed_hosts": ["*.example.com"]},
                 "https://example.org/dog.png", None, "host not allowed", id="allowed_hosts"),
    pytest.param({"signing_key": "k"}, "https://example.org/" + "x" * 5000, None, "too long",
                 id="too long"),
])
def test_urls_the_middleware_would_refuse_raise(options: dict[str, object], target: str,
                                                origin: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        builder(**options)(target, origin)
