"""The contract's response table (docs/RESPONSES.md) through the WSGI boundary, against a real origin."""

from __future__ import annotations

from typing import Any

import pytest
import webtest

from fic_middleware import FastImageCache

from .conftest import LAST_MODIFIED, Origin
from .images import png


# --- pass-through --------------------------------------------------------------------------

class ClosingBody:
    closed = False

    def __iter__(self) -> Any:
        return iter([b"streamed"])

    def close(self) -> None:
        self.closed = True


def test_pass_through_hands_over_the_same_objects(make_mw: Any) -> None:
    seen: dict[str, Any] = {}
    body = ClosingBody()

    def app(environ: dict[str, Any], start_response: Any) -> ClosingBody:
        seen["environ"], seen["start_response"] = environ, start_response
        start_response("200 OK", [])
        return body

    mw = make_mw(app)
    environ = {"PATH_INFO": "/page", "REQUEST_METHOD": "POST"}

    def start_response(status: str, headers: list[Any], exc_info: Any = None) -> None:
        pass

    result = mw(environ, start_response)
    assert result is body
    assert seen["environ"] is environ and seen["start_response"] is start_response


@pytest.mark.parametrize("path", ["/", "/_ficx", "/_ficx/o/t/img/a.png", "/fic/o/t/img/a.png",
                                  "/static/_fic/o/t/img/a.png"])
def test_paths_outside_the_prefix_reach_the_app(client: webtest.TestApp, origin: Origin,
                                                path: str) -> None:
    assert client.get(path).body == b"app"
    assert not origin.hits


@pytest.mark.parametrize("path", ["/_fic", "/_fic/", "/_fic/x", "/_fic/o", "/_fic/o/"])
def test_prefix_itself_is_not_found(client: webtest.TestApp, path: str) -> None:
    response = client.get(path, status=404)
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_custom_prefix(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(prefix="/media/cache/"))
    assert client.get("/media/cache/o/t/img/p.png").body == png("p.png")
    assert client.get("/_fic/o/t/img/p.png").body == b"app"


# --- hits and misses -----------------------------------------------------------------------

def test_miss_then_hit(client: webtest.TestApp, origin: Origin) -> None:
    first = client.get("/_fic/o/t/img/a.png")
    assert first.headers["Cache-Status"] == "fic; fwd=miss; stored"
    second = client.get("/_fic/o/t/img/a.png")
    assert second.headers["Cache-Status"] == "fic; hit"
    assert first.body == second.body == png("a.png")
    assert origin.hits["/img/a.png"] == 1


def test_hit_headers(client: webtest.TestApp) -> None:
    client.get("/_fic/o/t/img/h.png")
    response = client.get("/_fic/o/t/img/h.png")
    headers = response.headers
    assert headers["Content-Type"] == "image/png"
    assert headers["Content-Length"] == str(len(png("h.png")))
    assert headers["ETag"].startswith('"') and not headers["ETag"].startswith('W/')
    assert headers["ETag"] != '"origin-%d"' % len(png("h.png"))  # ours, not the origin's
    assert headers["Last-Modified"] == LAST_MODIFIED
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert 0 <= int(headers["Age"]) <= 1
    assert headers["Cache-Control"] in ("public, max-age=3600", "public, max-age=3599")
    assert "Set-Cookie" not in headers


def test_client_max_age_caps_cache_control(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(client_max_age="10m", forward_query=True))
    response = client.get("/_fic/o/t/img/long.png?cc=max-age%3D86400")
    assert response.headers["Cache-Control"] == "public, max-age=600"


def test_head_has_get_headers_and_no_body(client: webtest.TestApp, origin: Origin) -> None:
    get = client.get("/_fic/o/t/img/head.png")
    head = client.head("/_fic/o/t/img/head.png")
    assert head.body == b""
    assert head.headers["Content-Length"] == get.headers["Content-Length"]
    assert head.headers["ETag"] == get.headers["ETag"]
    assert head.headers["Cache-Status"] == "fic; hit"


def test_head_on_a_miss_fetches_and_stores(client: webtest.TestApp) -> None:
    assert client.head("/_fic/o/t/img/headmiss.png").headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert client.get("/_fic/o/t/img/headmiss.png").headers["Cache-Status"] == "fic; hit"


def test_same_image_under_two_spellings_is_one_entry(client: webtest.TestApp, origin: Origin) -> None:
    client.get("/_fic/o/t/img/%7Eu.png")
    assert client.get("/_fic/o/t/img/~u.png").headers["Cache-Status"] == "fic; hit"
    assert sum(origin.hits.values()) == 1


def test_query_is_ignored_by_default(client: webtest.TestApp, origin: Origin) -> None:
    client.get("/_fic/o/t/img/q.png?x=1")
    assert client.get("/_fic/o/t/img/q.png?x=2").headers["Cache-Status"] == "fic; hit"
    assert origin.seen[0].query_string == b""


def test_forward_query_passes_it_on_and_keys_on_it(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(forward_query=True))
    client.get("/_fic/o/t/img/fq.png?x=1")
    assert client.get("/_fic/o/t/img/fq.png?x=2").headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert [r.query_string for r in origin.seen] == [b"x=1", b"x=2"]


def test_gzip_encoded_origin_body_is_stored_decoded(client: webtest.TestApp) -> None:
    client.get("/_fic/o/t/gzip/z.png")
    response = client.get("/_fic/o/t/gzip/z.png")
    assert response.body == png("z.png")
    assert "Content-Encoding" not in response.headers


def test_redirects_are_followed(client: webtest.TestApp, origin: Origin) -> None:
    assert client.get("/_fic/o/t/redirect/3/r.png").body == png("r.png")
    assert origin.hits["/img/r.png"] == 1


def test_origin_headers_reach_the_origin_only(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(origin_headers={"t": {"Authorization": "Bearer s3cret"}}))
    response = client.get("/_fic/o/t/img/auth.png")
    assert origin.seen[0].headers["Authorization"] == "Bearer s3cret"
    assert "s3cret" not in str(response.headers)


def test_origin_headers_are_not_sent_to_another_host(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(origin_headers={"t": {"Authorization": "Bearer s3cret"}},
                                     allowed_networks=["127.0.0.1/32", "::1/128"],
                                     forward_query=True))
    other = f"http://localhost:{origin.port}/img/elsewhere.png"
    client.get(f"/_fic/o/t/goto/x?to={other}", status=200)
    assert len(origin.seen) == 2
    assert "Authorization" not in origin.seen[1].headers


def test_no_store_from_origin_is_served_but_not_stored(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(forward_query=True))
    for _ in range(2):
        response = client.get("/_fic/o/t/img/ns.png?cc=no-store")
        assert response.headers["Cache-Status"] == "fic; fwd=miss"
        assert response.headers["Cache-Control"] == "no-store"
    assert origin.hits["/img/ns.png"] == 2


def test_private_origin_response_is_not_stored_and_cookies_are_dropped(
        client: webtest.TestApp) -> None:
    response = client.get("/_fic/o/t/private/p.png")
    assert response.headers["Cache-Status"] == "fic; fwd=miss"
    assert "Set-Cookie" not in response.headers


def test_expired_entry_is_revalidated_with_the_origin(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(min_ttl=0, forward_query=True, stale_while_revalidate=0))
    client.get("/_fic/o/t/img/rv.png?cc=no-cache")
    response = client.get("/_fic/o/t/img/rv.png?cc=no-cache")
    assert response.headers["Cache-Status"] == "fic; fwd=stale; stored"
    assert response.body == png("rv.png")
    assert origin.seen[1].headers["If-None-Match"] == '"origin-%d"' % len(png("rv.png"))


# --- conditional requests ------------------------------------------------------------------

@pytest.mark.parametrize("spelling", ["{etag}", "W/{etag}", '"other", {etag}', "*"],
                         ids=["exact", "weak", "list", "star"])
def test_if_none_match_gives_304(client: webtest.TestApp, spelling: str) -> None:
    etag = client.get("/_fic/o/t/img/c.png").headers["ETag"]
    response = client.get("/_fic/o/t/img/c.png", headers={"If-None-Match": spelling.format(etag=etag)},
                          status=304)
    assert response.body == b""
    assert response.headers["ETag"] == etag
    assert "Content-Length" not in response.headers


def test_if_none_match_other_etag_gives_200(client: webtest.TestApp) -> None:
    client.get("/_fic/o/t/img/c2.png", headers={"If-None-Match": '"nope"'}, status=200)


def test_if_modified_since(client: webtest.TestApp) -> None:
    client.get("/_fic/o/t/img/ims.png")
    client.get("/_fic/o/t/img/ims.png", headers={"If-Modified-Since": LAST_MODIFIED}, status=304)
    client.get("/_fic/o/t/img/ims.png", headers={"If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"},
               status=200)


# --- client errors -------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_get_405(client: webtest.TestApp, origin: Origin, method: str) -> None:
    response = client.request("/_fic/o/t/img/m.png", method=method, expect_errors=True)
    assert response.status_int == 405
    assert response.headers["Allow"] == "GET, HEAD"
    assert not origin.hits


@pytest.mark.parametrize("path", [
    pytest.param("/_fic/o/t/../secret", id="dot-dot"),
    pytest.param("/_fic/o/t/img/../../secret", id="dot-dot deep"),
    pytest.param("/_fic/o/t/%2e%2e/secret", id="encoded dot-dot"),
    pytest.param("/_fic/o/t/%2E%2e/secret", id="mixed-case encoded dot-dot"),
    pytest.param("/_fic/o/t/./img/a.png", id="dot segment"),
    pytest.param("/_fic/o/t/img%5c..%5csecret", id="encoded backslash"),
    pytest.param("/_fic/o/t/img/a%00.png", id="NUL"),
    pytest.param("/_fic/o/t/img/a%0d%0aX:%20y.png", id="CRLF"),
    pytest.param("/_fic/o/t/%252e%252e/secret", id="double-encoded dot-dot"),
    pytest.param("/_fic/o/t/img%252fa.png", id="double-encoded slash"),
    pytest.param("/_fic/o/t/", id="empty image path"),
])
def test_malformed_paths_get_400(client: webtest.TestApp, origin: Origin, path: str) -> None:
    response = client.get(path, status=400)
    assert response.content_type == "text/plain"
    assert not origin.hits


@pytest.mark.parametrize("raw", ["/_fic/o/t/img%2fa.png", "/_fic/o/t/img%2Fa.png?x=1",
                                 "/_fic/o/t/img%5Ca.png"])
def test_encoded_slash_in_the_raw_uri_gets_400(client: webtest.TestApp, origin: Origin, raw: str) -> None:
    decoded = raw.split("?")[0].replace("%2f", "/").replace("%2F", "/").replace("%5C", "\\")
    client.get(decoded, extra_environ={"RAW_URI": raw}, status=400)
    client.get(decoded, extra_environ={"REQUEST_URI": raw}, status=400)
    assert not origin.hits


def test_unknown_origin_gets_404(client: webtest.TestApp) -> None:
    assert client.get("/_fic/o/nope/img/a.png", status=404).text == "unknown origin\n"


@pytest.mark.parametrize("code", [404, 410])
def test_origin_not_found_gets_404(client: webtest.TestApp, code: int) -> None:
    client.get(f"/_fic/o/t/status/{code}", status=404)


# --- origin errors -------------------------------------------------------------------------

@pytest.mark.parametrize("path", [
    pytest.param("/_fic/o/t/status/500", id="origin 500"),
    pytest.param("/_fic/o/t/status/403", id="origin 403"),
    pytest.param("/_fic/o/t/status/204", id="origin 204"),
    pytest.param("/_fic/o/t/html/page", id="not an image"),
    pytest.param("/_fic/o/t/html-as-png/x.png", id="html labelled png"),
    pytest.param("/_fic/o/t/gif-as-png/x.png", id="gif labelled png"),
    pytest.param("/_fic/o/t/big/2000000", id="too large by Content-Length"),
    pytest.param("/_fic/o/t/chunked/2000000", id="too large, chunked"),
    pytest.param("/_fic/o/t/brotli/x.png", id="unsupported Content-Encoding"),
    pytest.param("/_fic/o/t/redirect/5/x.png", id="too many redirects"),
])
def test_origin_failures_get_502_and_nothing_is_stored(make_mw: Any, origin: Origin, path: str) -> None:
    mw = make_mw(max_image_bytes="1MiB", max_bytes="10MiB")
    client = webtest.TestApp(mw)
    response = client.get(path, status=502)
    assert response.content_type == "text/plain"
    assert "secret-detail" not in response.text and "127.0.0.1" not in response.text
    assert mw.storage.stats()["entries"] == 0


def test_jpeg_is_served_when_allowed(client: webtest.TestApp) -> None:
    assert client.get("/_fic/o/t/jpeg/x.jpg").content_type == "image/jpeg"


def test_type_outside_allowed_types_gets_502(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(allowed_types="image/png"))
    client.get("/_fic/o/t/jpeg/x.jpg", status=502)


def test_origin_503_is_retried(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(retries=2))
    client.get("/_fic/o/t/status/503", status=502)
    assert origin.hits["/status/503"] == 3


def test_origin_4xx_is_not_retried(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(retries=2))
    client.get("/_fic/o/t/status/404", status=404)
    assert origin.hits["/status/404"] == 1


def test_slow_origin_gets_504(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(read_timeout="0.3s"))
    client.get("/_fic/o/t/slow/2/x.png", status=504)


def test_slow_drip_origin_is_cut_at_total_timeout(make_mw: Any) -> None:
    import time
    client = webtest.TestApp(make_mw(read_timeout="1s", total_timeout="1s"))
    started = time.monotonic()
    client.get("/_fic/o/t/drip/x.png", status=504)
    assert time.monotonic() - started < 3


def test_unreachable_origin_gets_502(make_mw: Any) -> None:
    import socket
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = webtest.TestApp(make_mw(origins={"gone": f"http://127.0.0.1:{port}"}))
    assert client.get("/_fic/o/gone/a.png", status=502).text == "origin could not be reached\n"


def test_loopback_origin_without_allowed_networks_gets_403(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(allowed_networks=[]))
    assert client.get("/_fic/o/t/img/a.png", status=403).text == "target address not allowed\n"
    assert not origin.hits


def test_redirect_to_a_refused_address_gets_403(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(allowed_networks=["127.0.0.1/32"], forward_query=True))
    other = f"http://[::1]:{origin.port}/img/a.png"
    client.get(f"/_fic/o/t/goto/x?to={other}", status=403)
    assert list(origin.hits) == ["/goto/x"]


def test_unexpected_error_is_a_plain_500_without_details(make_mw: Any,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    mw = make_mw()

    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("/secret/internal/path")

    monkeypatch.setattr(mw.fetcher, "fetch", boom)
    response = webtest.TestApp(mw).get("/_fic/o/t/img/a.png", status=500)
    assert response.text == "internal error\n"


def test_works_mounted_under_a_script_name(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(), extra_environ={"SCRIPT_NAME": "/sub"})
    assert client.get("/_fic/o/t/img/s.png").body == png("s.png")


def test_middleware_is_reusable_as_a_plain_wsgi_callable(make_mw: Any) -> None:
    mw: FastImageCache = make_mw()
    statuses = []
    environ = {"PATH_INFO": "/_fic/o/t/img/w.png", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    body = b"".join(mw(environ, lambda s, h, e=None: statuses.append(s)))
    assert statuses == ["200 OK"] and body == png("w.png")


def test_path_that_is_not_latin1_gets_400(make_mw: Any) -> None:
    """PEP 3333 servers never send one; a broken one must still not cause a 500."""
    mw = make_mw()
    statuses = []
    environ = {"PATH_INFO": "/_fic/o/t/img/\u20ac.png", "REQUEST_METHOD": "GET", "QUERY_STRING": ""}
    mw(environ, lambda s, h, e=None: statuses.append(s))
    assert statuses == ["400 Bad Request"]
