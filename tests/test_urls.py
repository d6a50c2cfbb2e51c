"""Canonical URLs: one spelling per resource."""

from __future__ import annotations

import pytest

from fic_middleware.urls import canonical_url, host_allowed, quote_wsgi_path

LONGEST_NAME = ".".join(["a" * 63, "b" * 63, "c" * 63, "d" * 61])  # 253 characters


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
    pytest.param(f"http://{'a' * 63}.com/", f"http://{'a' * 63}.com/", id="label of 63"),
    pytest.param(f"http://{LONGEST_NAME}/", f"http://{LONGEST_NAME}/", id="name of 253"),
    pytest.param("http://a_b.example/", "http://a_b.example/", id="underscore"),
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


@pytest.mark.parametrize("host", [
    pytest.param("a" * 64 + ".com", id="label over 63"),
    pytest.param("a..com", id="empty label"),
    pytest.param("..com", id="empty labels first"),
    pytest.param(".com", id="leading dot"),
    pytest.param("a.com..", id="two root dots"),
    pytest.param(LONGEST_NAME + "e.f", id="name over 253"),
    pytest.param("b\u00fccher" + "x" * 60 + ".example", id="international label over 63"),
    pytest.param("a..b\u00fccher.example", id="international name with an empty label"),
    pytest.param("[v1.x]", id="bracketed, not IPv6"),
    pytest.param("[fe80::1%25eth0]", id="IPv6 zone"),
    pytest.param("[::1::2]", id="bad IPv6"),
])
def test_invalid_host_is_not_a_target(host: str) -> None:
    with pytest.raises(ValueError):
        canonical_url(f"http://{host}/a.png")


@pytest.mark.parametrize("patterns, host, allowed", [
    pytest.param(["example.com"], "example.com", True, id="exact"),
    pytest.param(["*.example.com"], "img.example.com", True, id="wildcard"),
    pytest.param(["*.example.com"], "a.b.example.com", True, id="wildcard deep"),
    pytest.param(["*.example.com"], "example.com", False, id="wildcard excludes the bare name"),
    pytest.param(["*.example.com"], "evilexample.com", False, id="label boundary"),
    pytest.param(["example.com"], "img.example.com", False, id="exact is exact"),
    pytest.param([], "example.com", False, id="empty list"),
])
def test_host_allowed(patterns: list[str], host: str, allowed: bool) -> None:
    assert host_allowed(host, patterns) is allowed


def test_quote_wsgi_path_encodes_raw_bytes_once() -> None:
    assert quote_wsgi_path("/a b/100%/\xc3\xa9") == "/a%20b/100%25/%C3%A9"
