"""Canonical URLs: one spelling per resource."""

from __future__ import annotations

import pytest

from fic_middleware.urls import canonical_url, quote_wsgi_path


@pytest.mark.parametrize("url, canonical", [
    ("HTTP://Example.COM/a.png", "http://example.com/a.png"),
    ("http://example.com:80/a.png", "http://example.com/a.png"),
    ("https://example.com:443/a.png", "https://example.com/a.png"),
    ("https://example.com:8443/a.png", "https://example.com:8443/a.png"),
    ("http://example.com", "http://example.com/"),
    ("http://example.com/%7euser/%41.png", "http://example.com/~user/A.png"),
    ("http://example.com/a%2fb", "http://example.com/a%2Fb"),
    ("http://example.com/caf%c3%a9", "http://example.com/caf%C3%A9"),
    ("http://example.com/café", "http://example.com/caf%C3%A9"),
    ("http://example.com/a?b=%41&c=d", "http://example.com/a?b=A&c=d"),
    ("http://example.com/100%", "http://example.com/100%25"),
    ("http://[::1]:8080/a", "http://[::1]:8080/a"),
    ("http://Example.com./a", "http://example.com/a"),
    ("http://b\u00fccher.example/a", "http://xn--bcher-kva.example/a"),
])
def test_canonical(url: str, canonical: str) -> None:
    assert canonical_url(url) == canonical


@pytest.mark.parametrize("url", [
    "ftp://example.com/a", "javascript:alert(1)", "/relative", "http:///nohost",
    "http://user@example.com/", "http://a:b@example.com/", "http://example.com\\@evil.com/",
    "http://example.com:99999/", "http://exa mple.com/", "http://example.com/\x00",
])
def test_not_a_target(url: str) -> None:
    with pytest.raises(ValueError):
        canonical_url(url)


def test_quote_wsgi_path_encodes_raw_bytes_once() -> None:
    assert quote_wsgi_path("/a b/100%/\xc3\xa9") == "/a%20b/100%25/%C3%A9"
