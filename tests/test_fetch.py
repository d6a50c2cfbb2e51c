"""Fetching: certificates verified by default, redirects never downgrade nor leave
``allowed_hosts``, origin headers validated before they are kept."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import trustme
import webtest

from fic_middleware import FastImageCache, sign_url
from fic_middleware.fetch import Fetched, Fetcher

from .conftest import Origin
from .images import png

KEY = "test-signing-key-0123456789"


@pytest.fixture
def ca_file(tls_ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(path))
    return str(path)


def test_https_origin_with_a_trusted_certificate(make_mw: Any, tls_origin: Origin, ca_file: str) -> None:
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}, ca_bundle=ca_file))
    assert client.get("/_fic/o/s/img/tls.png").body == png("tls.png")


def test_untrusted_certificate_gets_502(make_mw: Any, tls_origin: Origin) -> None:
    """certifi's bundle does not know the test CA: like a self-signed origin."""
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}))
    response = client.get("/_fic/o/s/img/tls.png", status=502)
    assert response.text == "TLS connection to the origin failed\n"


def test_certificate_for_another_name_gets_502(make_mw: Any, tls_origin: Origin, ca_file: str) -> None:
    """The certificate names 127.0.0.1 and localhost; ::1 is not on it."""
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base.replace("127.0.0.1", "[::1]")},
                                     ca_bundle=ca_file, allowed_networks=["::1/128"]))
    response = client.get("/_fic/o/s/img/tls.png", expect_errors=True)
    assert response.status_int == 502


def test_verify_tls_false_is_explicit(make_mw: Any, tls_origin: Origin) -> None:
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}, verify_tls=False))
    assert client.get("/_fic/o/s/img/tls.png").body == png("tls.png")


def test_https_to_http_redirect_is_refused(make_mw: Any, tls_origin: Origin, origin: Origin,
                                           ca_file: str) -> None:
    client = webtest.TestApp(make_mw(origins={"s": tls_origin.base}, ca_bundle=ca_file,
                                     forward_query=True))
    client.get(f"/_fic/o/s/goto/x?to={origin.base}/img/a.png", status=403)
    assert not origin.hits


@pytest.mark.parametrize("location", ["ftp://127.0.0.1/a.png", "file:///etc/passwd",
                                      "http://user@127.0.0.1/a.png"])
def test_redirect_to_a_bad_url_is_refused(make_mw: Any, origin: Origin, location: str) -> None:
    client = webtest.TestApp(make_mw(forward_query=True))
    client.get(f"/_fic/o/t/goto/x?to={location}", status=403)
    assert list(origin.hits) == ["/goto/x"]


# --- allowed_hosts holds on every redirect hop ---------------------------------------------------

def resolving_test_names(mw: FastImageCache) -> webtest.TestApp:
    """Names under .test (RFC 2606) resolve to 127.0.0.1, for this middleware only: two
    host names for the one loopback origin, and nothing leaves loopback."""
    def resolve(host: str, port: int) -> list[str]:
        return ["127.0.0.1"] if host.endswith(".test") else []
    mw.fetcher = Fetcher(mw.config, resolver=resolve)
    mw.cache.fetcher = mw.fetcher
    return webtest.TestApp(mw)


def redirect_chain(port: int, start: str, hops: list[str]) -> str:
    """A URL on ``start`` that redirects through each of ``hops`` in turn to /img/a.png."""
    target = f"http://{hops[-1]}:{port}/img/a.png"
    for host in [start, *hops[:-1]][::-1]:
        target = f"http://{host}:{port}/goto/x?to={quote(target, safe='')}"
    return target


@pytest.mark.parametrize("allowed_hosts, hops, allowed", [
    pytest.param(["img.test"], ["img.test"], True, id="same host"),
    pytest.param(["img.test"], ["other.test"], False, id="other host"),
    pytest.param(["img.test", "*.cdn.test"], ["a.cdn.test"], True, id="wildcard"),
    pytest.param(["img.test", "*.cdn.test"], ["cdn.test"], False,
                 id="wildcard excludes the bare name"),
    pytest.param(["img.test", "*.cdn.test"], ["a.cdn.test", "other.test"], False, id="second hop"),
    pytest.param(["img.test", "*.cdn.test"], ["other.test", "a.cdn.test"], False,
                 id="through another host and back"),
])
def test_every_redirect_hop_of_a_signed_url_is_checked_against_allowed_hosts(
        make_mw: Any, origin: Origin, allowed_hosts: list[str], hops: list[str],
        allowed: bool) -> None:
    client = resolving_test_names(make_mw(signing_key=KEY, allowed_hosts=allowed_hosts))
    response = client.get(sign_url(redirect_chain(origin.port, "img.test", hops), KEY),
                          expect_errors=True)
    if allowed:
        assert response.body == png("a.png")
    else:
        assert (response.status_int, response.text) == (403, "host not allowed\n")
        assert "/img/a.png" not in origin.hits


@pytest.mark.parametrize("allowed_hosts, to, allowed", [
    pytest.param([], "other.test", True, id="no allowed_hosts: the address policy alone"),
    pytest.param(["cdn.test"], "other.test", False, id="outside allowed_hosts"),
    pytest.param(["cdn.test"], "cdn.test", True, id="listed"),
    pytest.param(["cdn.test"], "img.test", True, id="the origin's own host"),
])
def test_redirects_of_a_mapped_origin_obey_allowed_hosts_when_set(
        make_mw: Any, origin: Origin, allowed_hosts: list[str], to: str, allowed: bool) -> None:
    client = resolving_test_names(make_mw(origins={"m": f"http://img.test:{origin.port}"},
                                          allowed_hosts=allowed_hosts, forward_query=True))
    target = quote(f"http://{to}:{origin.port}/img/a.png", safe="")
    response = client.get(f"/_fic/o/m/goto/x?to={target}", expect_errors=True)
    if allowed:
        assert response.body == png("a.png")
    else:
        assert (response.status_int, response.text) == (403, "host not allowed\n")
        assert "/img/a.png" not in origin.hits


# --- origin headers that are kept are valid -------------------------------------------------------

@pytest.mark.parametrize("value, kept", [
    pytest.param('"abc"', '"abc"', id="strong"),
    pytest.param('W/"abc"', 'W/"abc"', id="weak"),
    pytest.param('""', '""', id="empty tag"),
    pytest.param('abc', None, id="unquoted"),
    pytest.param('"a"b"', None, id="inner quote"),
    pytest.param('"a b"', None, id="space"),
    pytest.param('"a\x01b"', None, id="control character"),
    pytest.param('"a\x7fb"', None, id="DEL"),
    pytest.param('"caf\u00e9"', None, id="not ASCII"),
    pytest.param('w/"abc"', None, id="lower-case weak prefix"),
])
def test_origin_etag_is_kept_only_if_valid(value: str, kept: str | None) -> None:
    """RFC 9110 §8.8.3; the kept ETag is sent back to the origin in If-None-Match."""
    assert Fetched(200, b"", "image/png", {"ETag": value}).etag == kept


@pytest.mark.parametrize("value, kept", [
    pytest.param("Wed, 21 Oct 2026 07:28:00 GMT", "Wed, 21 Oct 2026 07:28:00 GMT", id="IMF-fixdate"),
    pytest.param("Wed, 21 Oct 2026 07:28:00 GMT\x01", "Wed, 21 Oct 2026 07:28:00 GMT",
                 id="control character"),
    pytest.param("Sunday, 06-Nov-94 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT", id="RFC 850"),
    pytest.param("Sun Nov  6 08:49:37 1994", "Sun, 06 Nov 1994 08:49:37 GMT", id="asctime"),
    pytest.param("Sun, 06 Nov 1994 08:49:37 +0500", "Sun, 06 Nov 1994 03:49:37 GMT", id="offset"),
    pytest.param("yesterday", None, id="not a date"),
    pytest.param("", None, id="empty"),
])
def test_origin_last_modified_is_kept_as_an_http_date(value: str, kept: str | None) -> None:
    """RFC 9110 §5.6.7: parsed, and kept in the one form a sender generates."""
    assert Fetched(200, b"", "image/png", {"Last-Modified": value}).last_modified == kept


@pytest.mark.parametrize("value, age", [
    pytest.param("30", 30.0, id="seconds"),
    pytest.param(" 7 ", 7.0, id="whitespace"),
    pytest.param("30, 40", 30.0, id="list: the first member"),
    pytest.param("\u00b2", 0.0, id="superscript two"),
    pytest.param("-5", 0.0, id="negative"),
    pytest.param("1.5", 0.0, id="fraction"),
])
def test_origin_age_is_a_non_negative_integer_or_ignored(value: str, age: float) -> None:
    """RFC 9111 §5.1."""
    assert Fetched(200, b"", "image/png", {"Age": value}).age == age
