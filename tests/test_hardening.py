"""What an origin can get wrong: bodies, lengths, encodings, types, headers."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
import webtest

from .conftest import SVG, Origin, RawOrigin
from .images import png


def http_response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "\r\n".join([f"HTTP/1.1 {status}", *headers, "Connection: close"])
    return head.encode() + b"\r\n\r\n" + body


@pytest.fixture
def raw_client(make_mw: Any, raw_origin: RawOrigin) -> tuple[webtest.TestApp, Any]:
    mw = make_mw(origins={"raw": raw_origin.base}, max_image_bytes="64KiB", max_bytes="1MiB")
    return webtest.TestApp(mw), mw


def test_truncated_body_gets_502_and_is_not_stored(raw_client: Any, raw_origin: RawOrigin) -> None:
    client, mw = raw_client
    raw_origin.responses["/cut.png"] = http_response(
        png("cut")[:20], "Content-Type: image/png", f"Content-Length: {len(png('cut'))}")
    client.get("/_fic/o/raw/cut.png", status=502)
    assert mw.storage.stats()["entries"] == 0


def test_chunked_body_over_the_cap_despite_a_small_content_length(
        raw_client: Any, raw_origin: RawOrigin) -> None:
    """Content-Length says 100, Transfer-Encoding wins and streams 70 KiB."""
    client, mw = raw_client
    chunk = png("lie") + b"\0" * (70 << 10)
    raw_origin.responses["/lie.png"] = http_response(
        f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n0\r\n\r\n",
        "Content-Type: image/png", "Content-Length: 100", "Transfer-Encoding: chunked")
    client.get("/_fic/o/raw/lie.png", status=502)
    assert mw.storage.stats()["entries"] == 0


def test_body_longer_than_its_content_length_is_cut_at_the_length(
        raw_client: Any, raw_origin: RawOrigin) -> None:
    client, _ = raw_client
    body = png("long")
    raw_origin.responses["/long.png"] = http_response(
        body + b"\0" * (200 << 10), "Content-Type: image/png", f"Content-Length: {len(body)}")
    assert client.get("/_fic/o/raw/long.png").body == body


def test_declared_length_over_the_cap_is_refused_before_reading(
        raw_client: Any, raw_origin: RawOrigin) -> None:
    client, _ = raw_client
    raw_origin.responses["/huge.png"] = http_response(
        png("huge"), "Content-Type: image/png", "Content-Length: 999999999")
    assert client.get("/_fic/o/raw/huge.png", status=502).text == "image is larger than max_image_bytes\n"


def test_garbage_status_line_gets_502(raw_client: Any, raw_origin: RawOrigin) -> None:
    client, _ = raw_client
    raw_origin.responses["/junk.png"] = b"SSH-2.0-OpenSSH\r\n\r\n"
    client.get("/_fic/o/raw/junk.png", status=502)


def test_connection_closed_without_answer_gets_502(raw_client: Any, raw_origin: RawOrigin) -> None:
    client, _ = raw_client
    raw_origin.responses["/empty.png"] = b""
    client.get("/_fic/o/raw/empty.png", status=502)


def test_gzip_bomb_is_cut_at_the_cap(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(max_image_bytes="1MiB"))
    response = client.get("/_fic/o/t/gzip-bomb/x.png", status=502)
    assert response.text == "image is larger than max_image_bytes\n"


def test_content_encoding_that_does_not_decode_gets_502(raw_client: Any, raw_origin: RawOrigin) -> None:
    client, _ = raw_client
    raw_origin.responses["/notgz.png"] = http_response(
        png("notgz"), "Content-Type: image/png", "Content-Encoding: gzip",
        f"Content-Length: {len(png('notgz'))}")
    client.get("/_fic/o/raw/notgz.png", status=502)


def test_origin_headers_do_not_reach_the_client(raw_client: Any, raw_origin: RawOrigin) -> None:
    client, _ = raw_client
    body = gzip.compress(png("hdr"))
    raw_origin.responses["/hdr.png"] = http_response(
        body, "Content-Type: image/png; charset=binary", "Content-Encoding: gzip",
        f"Content-Length: {len(body)}", "Set-Cookie: a=b", "Access-Control-Allow-Origin: *",
        "X-Powered-By: leaky", "Server: origin/1.0", "Content-Security-Policy: none",
        "Link: <https://evil>; rel=preload", "Refresh: 0; url=https://evil")
    response = client.get("/_fic/o/raw/hdr.png")
    assert sorted(response.headers) == sorted([
        "Content-Type", "Content-Length", "ETag", "Cache-Control", "Age",
        "Cache-Status", "X-Content-Type-Options"])
    assert response.headers["Content-Type"] == "image/png"
    assert response.body == png("hdr")


def test_svg_is_refused_by_default(client: webtest.TestApp) -> None:
    client.get("/_fic/o/t/svg/x.svg", status=502)


def test_svg_when_allowed_is_sandboxed(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(allowed_types="image/png image/svg+xml"))
    response = client.get("/_fic/o/t/svg/x.svg")
    assert response.body == SVG
    assert response.headers["Content-Security-Policy"] == \
        "default-src 'none'; style-src 'unsafe-inline'; sandbox"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/_fic/o/t/svg/x.svg").headers["Content-Security-Policy"].endswith("sandbox")


def test_html_labelled_svg_is_refused(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(allowed_types="image/svg+xml"))
    client.get("/_fic/o/t/html-as-svg/x.svg", status=502)


def test_error_bodies_carry_no_internals(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(allowed_networks=[]))
    for path, status in [("/_fic/o/t/img/a.png", 403), ("/_fic/o/t/../x", 400),
                         ("/_fic/o/nope/x", 404)]:
        response = client.get(path, status=status)
        assert response.content_type == "text/plain" and response.charset == "utf-8"
        assert "127.0.0.1" not in response.text and str(origin.port) not in response.text
        assert "Traceback" not in response.text and len(response.text) < 100
