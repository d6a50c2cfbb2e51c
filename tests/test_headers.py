"""Origin headers replayed (pass_headers), fixed headers (add_headers), CORS (cors_origins)."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import webtest

from fic_middleware import ConfigError

from .conftest import Clock, Origin
from .images import png

APP = "https://app.example.com"


def headers_path(name: str, *lines: str, cc: str = "max-age=3600") -> str:
    """The test origin's /headers/ image answering with these header lines."""
    query = "&".join(f"h={quote(line)}" for line in lines)
    return f"/_fic/o/t/headers/{name}.png?cc={quote(cc)}&{query}"


def header_lines(res: webtest.TestResponse, name: str) -> list[str]:
    return [v for k, v in res.headerlist if k.lower() == name.lower()]


@pytest.fixture
def app(make_mw: Any) -> Any:
    def make(**options: Any) -> webtest.TestApp:
        return webtest.TestApp(make_mw(forward_query=True, **options))
    return make


# --- pass_headers ---------------------------------------------------------------------------

DEFAULT_SET = ["Access-Control-Allow-Origin: *", "Timing-Allow-Origin: *",
               "Content-Disposition: inline; filename=a.png", "Link: </a.css>; rel=preload"]


def test_default_pass_headers_replayed_on_the_miss(app: Any) -> None:
    res = app().get(headers_path("d1", *DEFAULT_SET))
    assert res.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert [(k, v) for k, v in res.headerlist if f"{k}: {v}" in DEFAULT_SET] == \
        [tuple(line.split(": ", 1)) for line in DEFAULT_SET]


def test_default_pass_headers_replayed_on_hits(app: Any, origin: Origin) -> None:
    client = app()
    client.get(headers_path("d2", *DEFAULT_SET))
    res = client.get(headers_path("d2", *DEFAULT_SET))
    assert res.headers["Cache-Status"] == "fic; hit"
    assert origin.hits["/headers/d2.png"] == 1
    for line in DEFAULT_SET:
        name, value = line.split(": ", 1)
        assert res.headers[name] == value


def test_headers_not_listed_are_not_replayed(app: Any) -> None:
    res = app().get(headers_path("d3", "X-Internal: yes", "Link: <a>"))
    assert "X-Internal" not in res.headers
    assert res.headers["Link"] == "<a>"


def test_content_disposition_attachment_not_replayed(app: Any) -> None:
    res = app().get(headers_path("d4", "Content-Disposition: attachment; filename=a.png",
                                 "Link: <a>"))
    assert "Content-Disposition" not in res.headers
    assert res.headers["Link"] == "<a>"  # what is replayed still is


def test_listed_header_replayed(app: Any) -> None:
    client = app(pass_headers=["X-Test-Header", "Link"])
    client.get(headers_path("d5", "X-Test-Header: one", "Link: <a>"))
    res = client.get(headers_path("d5", "X-Test-Header: one", "Link: <a>"))
    assert res.headers["Cache-Status"] == "fic; hit"
    assert res.headers["X-Test-Header"] == "one"


def test_repeated_header_replayed_as_sent(app: Any) -> None:
    client = app()
    client.get(headers_path("d6", "Link: <a>", "Link: <b>"))
    res = client.get(headers_path("d6", "Link: <a>", "Link: <b>"))
    assert header_lines(res, "Link") == ["<a>", "<b>"]


@pytest.mark.parametrize("name", [
    "Set-Cookie", "set-cookie2", "Connection", "Keep-Alive", "Proxy-Authenticate", "TE",
    "Trailer", "Transfer-Encoding", "Upgrade", "Server", "Content-Type", "Content-Length",
    "ETag", "Cache-Control", "Age", "Cache-Status", "Date", "X-Content-Type-Options",
    "Content-Security-Policy",
])
def test_never_replayed_header_in_pass_headers_is_config_error(make_mw: Any, name: str) -> None:
    with pytest.raises(ConfigError, match=f"pass_headers: '{name}' is never replayed"):
        make_mw(pass_headers=["Link", name])


def test_set_cookie_from_the_origin_never_replayed(app: Any) -> None:
    client = app()
    miss = client.get(headers_path("c1", "Set-Cookie: session=secret", "Link: <a>"))
    hit = client.get(headers_path("c1", "Set-Cookie: session=secret", "Link: <a>"))
    assert hit.headers["Cache-Status"] == "fic; hit"
    assert "Set-Cookie" not in miss.headers and "Set-Cookie" not in hit.headers
    assert hit.headers["Link"] == "<a>"  # what is replayed still is


def test_header_with_a_control_character_is_dropped(make_mw: Any, raw_origin: Any) -> None:
    body = png("ctl")
    raw_origin.responses["/ctl.png"] = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: max-age=3600\r\n"
        b"X-Test-Header: a\x01b\r\nLink: <a>\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    client = webtest.TestApp(make_mw(origins={"raw": raw_origin.base},
                                     pass_headers=["X-Test-Header", "Link"]))
    miss = client.get("/_fic/o/raw/ctl.png")
    hit = client.get("/_fic/o/raw/ctl.png")
    assert hit.headers["Cache-Status"] == "fic; hit"
    for res in (miss, hit):
        assert "X-Test-Header" not in res.headers
        assert res.headers["Link"] == "<a>"


def test_header_named_by_connection_is_not_replayed(make_mw: Any, raw_origin: Any) -> None:
    body = png("conn")
    raw_origin.responses["/conn.png"] = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nConnection: close, Link\r\n"
        b"Link: <a>\r\nTiming-Allow-Origin: *\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    client = webtest.TestApp(make_mw(origins={"raw": raw_origin.base}))
    res = client.get("/_fic/o/raw/conn.png")
    assert "Link" not in res.headers
    assert res.headers["Timing-Allow-Origin"] == "*"


def test_stored_headers_updated_from_a_304(make_mw: Any, raw_origin: Any) -> None:

    clock = Clock()
    body = png("upd")
    raw_origin.responses["/upd.png"] = (
        b'HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: max-age=60\r\n'
        b'ETag: "v1"\r\nLink: <old>\r\nTiming-Allow-Origin: *\r\n'
        + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
    client = webtest.TestApp(make_mw(clock=clock, origins={"raw": raw_origin.base},
                                     stale_while_revalidate=0, min_ttl=0))
    client.get("/_fic/o/raw/upd.png")
    raw_origin.responses["/upd.png"] = (
        b'HTTP/1.1 304 Not Modified\r\nCache-Control: max-age=60\r\nETag: "v1"\r\n'
        b"Link: <new>\r\n\r\n")
    clock.now += 120
    res = client.get("/_fic/o/raw/upd.png")
    assert res.headers["Cache-Status"] == "fic; fwd=stale; stored"
    assert res.body == body
    assert res.headers["Link"] == "<new>"
    assert res.headers["Timing-Allow-Origin"] == "*"  # not in the 304: kept


# --- add_headers ----------------------------------------------------------------------------

def test_add_headers_on_misses_and_hits(app: Any) -> None:
    client = app(add_headers={"X-Served-By": "fic", "Cross-Origin-Resource-Policy": "cross-origin"})
    miss = client.get(headers_path("a1"))
    hit = client.get(headers_path("a1"))
    assert hit.headers["Cache-Status"] == "fic; hit"
    for res in (miss, hit):
        assert res.headers["X-Served-By"] == "fic"
        assert res.headers["Cross-Origin-Resource-Policy"] == "cross-origin"


def test_add_headers_from_an_ini_style_value(app: Any) -> None:
    res = app(add_headers="X-One: 1\nX-Two: 2").get(headers_path("a2"))
    assert (res.headers["X-One"], res.headers["X-Two"]) == ("1", "2")


@pytest.mark.parametrize("headers, message", [
    pytest.param({"Cache-Control": "no-store"}, "'Cache-Control' is never replayed", id="owned"),
    pytest.param({"Set-Cookie": "a=b"}, "'Set-Cookie' is never replayed", id="cookie"),
    pytest.param({"X-A": "a\x01b"}, "the value of 'X-A' has a control character",
                 id="control-character"),
    pytest.param({"Bad Name": "x"}, "'Bad Name' is not a valid header name", id="bad-name"),
])
def test_bad_add_headers_is_config_error(make_mw: Any, headers: dict[str, str],
                                         message: str) -> None:
    with pytest.raises(ConfigError, match=f"add_headers: {message}"):
        make_mw(add_headers=headers)


# --- cors_origins ---------------------------------------------------------------------------

def test_cors_answered_on_hits(app: Any) -> None:
    client = app(cors_origins=[APP, "https://other.example.com"])
    client.get(headers_path("o1"), headers={"Origin": APP})
    res = client.get(headers_path("o1"), headers={"Origin": APP})
    assert res.headers["Cache-Status"] == "fic; hit"
    assert res.headers["Access-Control-Allow-Origin"] == APP
    assert res.headers["Vary"] == "Origin"


def test_cors_answers_each_listed_origin_its_own(app: Any) -> None:
    client = app(cors_origins=[APP, "https://other.example.com"])
    client.get(headers_path("o2"), headers={"Origin": APP})
    res = client.get(headers_path("o2"), headers={"Origin": "https://other.example.com"})
    assert res.headers["Access-Control-Allow-Origin"] == "https://other.example.com"


def test_cors_not_answered_for_an_unlisted_origin(app: Any) -> None:
    client = app(cors_origins=[APP])
    client.get(headers_path("o3"), headers={"Origin": APP})
    res = client.get(headers_path("o3"), headers={"Origin": "https://evil.example"})
    assert res.headers["Cache-Status"] == "fic; hit"
    assert "Access-Control-Allow-Origin" not in res.headers
    assert res.headers["Vary"] == "Origin"  # what a cache after us must know


def test_cors_origin_header_of_the_origin_not_replayed_when_cors_origins_set(app: Any) -> None:
    client = app(cors_origins=[APP])
    res = client.get(headers_path("o4", "Access-Control-Allow-Origin: *"),
                     headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in res.headers


def test_cors_star_answered_without_origin(app: Any) -> None:
    client = app(cors_origins="*")
    client.get(headers_path("o5"))
    res = client.get(headers_path("o5"))
    assert res.headers["Cache-Status"] == "fic; hit"
    assert res.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in res.headers


def test_cors_answered_on_a_304(app: Any) -> None:
    client = app(cors_origins=[APP])
    etag = client.get(headers_path("o6")).headers["ETag"]
    res = client.get(headers_path("o6"), headers={"Origin": APP, "If-None-Match": etag},
                     status=304)
    assert res.headers["Access-Control-Allow-Origin"] == APP


def test_preflight_from_a_listed_origin(app: Any, origin: Origin) -> None:
    res = app(cors_origins=[APP]).options(
        headers_path("p1"), headers={"Origin": APP, "Access-Control-Request-Method": "GET"},
        status=204)
    assert res.headers["Access-Control-Allow-Origin"] == APP
    assert res.headers["Access-Control-Allow-Methods"] == "GET, HEAD"
    assert res.headers["Vary"] == "Origin"
    assert origin.hits["/headers/p1.png"] == 0


def test_preflight_from_an_unlisted_origin_is_405(app: Any) -> None:
    app(cors_origins=[APP]).options(headers_path("p2"), headers={"Origin": "https://evil.example"},
                                    status=405)


def test_preflight_without_cors_origins_is_405(app: Any) -> None:
    app().options(headers_path("p3"), headers={"Origin": APP}, status=405)


def test_other_methods_stay_405_with_cors(app: Any) -> None:
    app(cors_origins=[APP]).post(headers_path("p4"), headers={"Origin": APP}, status=405)


@pytest.mark.parametrize("value", [
    pytest.param("app.example.com", id="no-scheme"),
    pytest.param("https://app.example.com/", id="path"),
    pytest.param("ftp://app.example.com", id="scheme"),
    pytest.param("*, https://app.example.com", id="star-and-more"),
    pytest.param("https://user@app.example.com", id="userinfo"),
])
def test_bad_cors_origins_is_config_error(make_mw: Any, value: str) -> None:
    with pytest.raises(ConfigError, match=r"cors_origins: (expected|'\*' already)"):
        make_mw(cors_origins=value)


def test_add_headers_allow_origin_with_cors_origins_is_config_error(make_mw: Any) -> None:
    with pytest.raises(ConfigError, match="add_headers: Access-Control-Allow-Origin is answered"):
        make_mw(cors_origins=[APP], add_headers={"Access-Control-Allow-Origin": "*"})
