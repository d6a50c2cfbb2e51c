"""What an origin can get wrong: bodies, lengths, encodings, types, headers."""

from __future__ import annotations

import gzip
import socket
import struct
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import webtest
from werkzeug.http import parse_date

from fic_middleware import sign_url

from .conftest import SVG, Origin, RawOrigin
from .images import png
from .reliability.conftest import FaultOrigin, Script, head

KEY = "test-signing-key-0123456789"


def http_response(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    """Header bytes are latin-1 (RFC 9110 §5.5 obs-text), as a careless origin sends them."""
    head = "\r\n".join([f"HTTP/1.1 {status}", *headers, "Connection: close"])
    return head.encode("latin-1") + b"\r\n\r\n" + body


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
    # Only the default pass_headers (docs/RESPONSES.md) come through.
    assert sorted(response.headers) == sorted([
        "Content-Type", "Content-Length", "ETag", "Cache-Control", "Age",
        "Cache-Status", "X-Content-Type-Options", "Access-Control-Allow-Origin", "Link"])
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


# --- malformed input and origin headers: a contract status, never a 500 -----------------------

INVALID_HOSTS = [pytest.param("a" * 64 + ".example", id="label over 63"),
                 pytest.param("a..example", id="empty label"),
                 pytest.param("..example", id="empty first labels")]


@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_signed_url_with_an_invalid_host_gets_400(make_mw: Any, host: str) -> None:
    client = webtest.TestApp(make_mw(signing_key=KEY))
    assert client.get(sign_url(f"http://{host}/a.png", KEY), status=400).text == "bad URL\n"


@pytest.mark.parametrize("host", INVALID_HOSTS)
def test_redirect_to_an_invalid_host_gets_403(raw_client: Any, raw_origin: RawOrigin,
                                              host: str) -> None:
    client, _ = raw_client
    raw_origin.responses["/moved.png"] = http_response(
        b"", f"Location: http://{host}/a.png", "Content-Length: 0", status="302 Found")
    client.get("/_fic/o/raw/moved.png", status=403)


@pytest.mark.parametrize("value", [
    pytest.param("\u00b2", id="superscript two"),  # str.isdigit() says yes, int() says no
    pytest.param("-1", id="negative"),
    pytest.param("+75", id="plus sign"),
    pytest.param("7e1", id="exponent"),
    pytest.param("", id="empty"),
])
def test_invalid_content_length_gets_502_and_is_not_stored(
        raw_client: Any, raw_origin: RawOrigin, value: str) -> None:
    """RFC 9112 §6.3: an invalid Content-Length makes the framing unknowable."""
    client, mw = raw_client
    raw_origin.responses["/len.png"] = http_response(
        png("len"), "Content-Type: image/png", f"Content-Length: {value}")
    client.get("/_fic/o/raw/len.png", status=502)
    assert mw.storage.stats()["entries"] == 0


def test_repeated_equal_content_length_is_accepted(raw_client: Any, raw_origin: RawOrigin) -> None:
    """RFC 9110 §8.6: a list of one repeated value may be taken as that value."""
    client, _ = raw_client
    body = png("len2")
    raw_origin.responses["/len2.png"] = http_response(
        body, "Content-Type: image/png", f"Content-Length: {len(body)}, {len(body)}")
    assert client.get("/_fic/o/raw/len2.png").body == body


@pytest.mark.parametrize("value", [
    pytest.param("\u00b2", id="superscript two"),
    pytest.param("-5", id="negative"),
    pytest.param("1.5", id="fraction"),
    pytest.param("soon", id="word"),
])
def test_invalid_age_is_ignored(raw_client: Any, raw_origin: RawOrigin, value: str) -> None:
    """RFC 9111 §5.1: a cache SHOULD ignore an Age that is not a non-negative integer."""
    client, _ = raw_client
    body = png("age")
    raw_origin.responses["/age.png"] = http_response(
        body, "Content-Type: image/png", f"Content-Length: {len(body)}", f"Age: {value}")
    assert client.get("/_fic/o/raw/age.png").body == body


def test_last_modified_with_a_control_character_is_stored_as_a_clean_date(
        raw_client: Any, raw_origin: RawOrigin) -> None:
    """The stored value is replayed on every hit: a control character in it would make each
    hit a 500 under gunicorn (and trips webtest's WSGI lint here)."""
    client, _ = raw_client
    body = png("lm")
    raw_origin.responses["/lm.png"] = http_response(
        body, "Content-Type: image/png", f"Content-Length: {len(body)}",
        "Last-Modified: Wed, 21 Oct 2026 07:28:00 GMT\x01")
    client.get("/_fic/o/raw/lm.png")
    hit = client.get("/_fic/o/raw/lm.png")
    assert hit.headers["Cache-Status"] == "fic; hit"
    assert hit.headers["Last-Modified"] == "Wed, 21 Oct 2026 07:28:00 GMT"
    assert parse_date(hit.headers["Last-Modified"]) is not None


def test_unparseable_last_modified_is_not_stored(raw_client: Any, raw_origin: RawOrigin) -> None:
    client, _ = raw_client
    body = png("lm2")
    raw_origin.responses["/lm2.png"] = http_response(
        body, "Content-Type: image/png", f"Content-Length: {len(body)}",
        "Last-Modified: yesterday\xe9")
    client.get("/_fic/o/raw/lm2.png")
    hit = client.get("/_fic/o/raw/lm2.png")
    assert hit.headers["Cache-Status"] == "fic; hit"
    assert "Last-Modified" not in hit.headers


# --- compressed bodies: the limits hold on the bytes read as well as on the decoded bytes -------

# A gzip member header (RFC 1952 §2.3) with FCOMMENT set: a zero-terminated comment follows,
# which the decoder consumes without producing a byte of output.
GZIP_COMMENT_HEAD = b"\x1f\x8b\x08\x10" + struct.pack("<I", 0) + b"\x00\xff"
# A zlib stream (RFC 1950) of empty, non-final stored deflate blocks (RFC 1951 §3.2.4).
DEFLATE_HEAD = b"\x78\x9c"
EMPTY_STORED_BLOCK = b"\x00\x00\x00\xff\xff"
ENDLESS = [pytest.param("gzip", GZIP_COMMENT_HEAD, b"c" * 4096, id="gzip comment"),
           pytest.param("deflate", DEFLATE_HEAD, EMPTY_STORED_BLOCK * 800, id="deflate empty blocks")]


class PlayedOrigin(FaultOrigin):
    """A FaultOrigin that tells whether the client hung up before a script was played out
    (``cut``), and how many scripts were played to their end (``played_out``)."""

    def __init__(self) -> None:
        super().__init__()
        self.cut = threading.Event()
        self.played_out = 0

    def _play(self, conn: socket.socket, script: Script) -> None:
        for step in script:
            if isinstance(step, float | int):
                if self.stopping.wait(step):
                    return
                continue
            assert isinstance(step, bytes)
            try:
                conn.sendall(step)
            except OSError:
                self.cut.set()
                return
        with self.lock:
            self.played_out += 1

    def join(self) -> None:
        """Wait for every connection's script to end, played out or cut."""
        with self.lock:
            threads = list(self.threads)
        for thread in threads:
            thread.join(5)


@pytest.fixture
def played_origin() -> Iterator[PlayedOrigin]:
    origin = PlayedOrigin()
    yield origin
    origin.close()


@pytest.mark.parametrize("encoding, start, filler", ENDLESS)
def test_endless_compressed_body_is_cut_at_max_image_bytes(
        make_mw: Any, played_origin: PlayedOrigin, encoding: str, start: bytes, filler: bytes) -> None:
    """64 KiB allowed, 16 MiB sent, not one byte of it decodes to output."""
    mw = make_mw(origins={"f": played_origin.base}, max_image_bytes="64KiB")
    played_origin.behave("/z.png", head(None, f"Content-Encoding: {encoding}") + start,
                         *[filler] * ((16 << 20) // len(filler)))
    response = webtest.TestApp(mw).get("/_fic/o/f/z.png", status=502)
    assert response.text == "image is larger than max_image_bytes\n"
    assert played_origin.cut.wait(5), "the origin got to send all of it"
    assert mw.storage.stats()["entries"] == 0


@pytest.mark.parametrize("encoding, start, filler", ENDLESS)
def test_dripping_compressed_body_is_cut_at_total_timeout(
        make_mw: Any, played_origin: PlayedOrigin, encoding: str, start: bytes, filler: bytes) -> None:
    """A few bytes every 0.1 s (read_timeout never fires), none of them decoding to output:
    the fetch ends at total_timeout, while the origin is still dripping."""
    mw = make_mw(origins={"f": played_origin.base}, read_timeout="1s", total_timeout="1s")
    played_origin.behave("/zd.png", head(None, f"Content-Encoding: {encoding}") + start,
                         *[0.1, filler[:5]] * 100)
    webtest.TestApp(mw).get("/_fic/o/f/zd.png", status=504)
    assert played_origin.cut.wait(5), "the fetch outlived the drip"
    assert mw.storage.stats()["entries"] == 0


@pytest.mark.parametrize("encoding, compress", [
    pytest.param("gzip", gzip.compress, id="gzip"),
    pytest.param("x-gzip", gzip.compress, id="x-gzip"),
    pytest.param("deflate", zlib.compress, id="deflate (zlib)"),
    pytest.param("deflate", lambda data: zlib.compress(data, wbits=-15), id="deflate (raw)"),
    pytest.param("gzip", lambda data: gzip.compress(data[:50]) + gzip.compress(data[50:]),
                 id="gzip, two members"),
])
def test_compressed_body_is_decoded(raw_client: Any, raw_origin: RawOrigin, encoding: str,
                                    compress: Any) -> None:
    client, _ = raw_client
    body = png(f"enc-{encoding}")
    raw_origin.responses["/enc.png"] = http_response(
        compress(body), "Content-Type: image/png", f"Content-Encoding: {encoding}")
    assert client.get("/_fic/o/raw/enc.png").body == body


def test_truncated_compressed_body_gets_502(raw_client: Any, raw_origin: RawOrigin) -> None:
    client, mw = raw_client
    raw_origin.responses["/gzcut.png"] = http_response(
        gzip.compress(png("gzcut"))[:-8], "Content-Type: image/png", "Content-Encoding: gzip")
    client.get("/_fic/o/raw/gzcut.png", status=502)
    assert mw.storage.stats()["entries"] == 0


def test_retried_status_with_an_endless_body_is_not_drained(
        make_mw: Any, played_origin: PlayedOrigin) -> None:
    """An origin 503 is retried; the answer retried is closed, not read to its end (urllib3
    would drain it without our cap or deadline)."""
    mw = make_mw(origins={"f": played_origin.base}, retries=2, max_image_bytes="64KiB")
    played_origin.behave("/busy.png", head(None, status="503 Service Unavailable"),
                         *[b"x" * 65536] * 256)
    webtest.TestApp(mw).get("/_fic/o/f/busy.png", status=502)
    played_origin.join()
    assert played_origin.hits["/busy.png"] == 3
    assert played_origin.played_out == 0
