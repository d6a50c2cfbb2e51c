"""An origin that breaks while it answers: reset, truncated, dripping, untrusted. Each fault
is a clear error for that request and leaves nothing behind: when the origin behaves again,
the same key is fetched, stored and served with the origin's exact bytes."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import trustme

from ..conftest import Origin
from ..images import png
from .conftest import (
    RST,
    Answer,
    FaultOrigin,
    Script,
    assert_sane,
    call,
    head,
    sized_png,
    whole,
)

pytestmark = pytest.mark.slow  # the reliability suite: scripts/test --fast skips it

BODY = sized_png("fault", 48 << 10)
HALF = len(BODY) // 2


class Ahead:
    """The wall clock, moved ``by`` seconds ahead."""

    def __init__(self) -> None:
        self.by = 0.0

    def __call__(self) -> float:
        return time.time() + self.by


@pytest.fixture
def ahead() -> Ahead:
    return Ahead()


@pytest.fixture
def mw(make_mw: Any, fault_origin: FaultOrigin, ahead: Ahead) -> Any:
    return make_mw(origins={"f": fault_origin.base}, read_timeout="1s", total_timeout="2s",
                   max_bytes="4MiB", max_image_bytes="1MiB", clock=ahead)


def recovers(mw: Any, fault_origin: FaultOrigin, path: str, body: bytes = BODY) -> None:
    """Once the origin answers well, the key is fetched, stored and then hit, byte-exact."""
    fault_origin.behave(path, *whole(body))
    first = call(mw, f"/_fic/o/f{path}")
    assert_sane(first, body)
    assert (first.status, first.headers["Cache-Status"]) == (200, "fic; fwd=miss; stored")
    second = call(mw, f"/_fic/o/f{path}")
    assert_sane(second, body)
    assert (second.status, second.headers["Cache-Status"]) == (200, "fic; hit")
    assert mw.cache.stats.corrupt == 0


def fails(mw: Any, path: str, status: int) -> Answer:
    answer = call(mw, f"/_fic/o/f{path}")
    assert answer.status == status, answer
    assert_sane(answer, BODY)
    assert mw.storage.stats()["entries"] == 0, "a failed fetch left an entry"
    return answer


# --- 1. the origin resets the connection -----------------------------------------------------

@pytest.mark.parametrize("script", [
    pytest.param((RST,), id="before the status line"),
    pytest.param((head(len(BODY)), 0.05, RST), id="after the head"),
    pytest.param((head(len(BODY)) + BODY[:HALF], 0.05, RST), id="mid-body"),
    pytest.param((head(len(BODY)) + BODY[:-1], 0.05, RST), id="one byte short"),
    pytest.param((head(None, "Transfer-Encoding: chunked") + b"%x\r\n" % HALF + BODY[:HALF]
                  + b"\r\n", 0.05, RST), id="chunked, mid-body"),
])
def test_reset_is_502_then_the_key_recovers(mw: Any, fault_origin: FaultOrigin,
                                            script: Script) -> None:
    fault_origin.behave("/reset.png", *script)
    fails(mw, "/reset.png", 502)
    fails(mw, "/reset.png", 502)  # a failure is not remembered as an answer
    assert fault_origin.hits["/reset.png"] == 2
    recovers(mw, fault_origin, "/reset.png")


def test_reset_with_retries_on(make_mw: Any, fault_origin: FaultOrigin) -> None:
    """Retries (the default 2) cover connect errors: a mid-body reset is still one clean 502."""
    mw = make_mw(origins={"f": fault_origin.base}, retries=2, total_timeout="2s")
    fault_origin.behave("/reset.png", head(len(BODY)) + BODY[:HALF], 0.05, RST)
    fails(mw, "/reset.png", 502)
    recovers(mw, fault_origin, "/reset.png")


# --- 2. the body is shorter than its Content-Length ------------------------------------------

@pytest.mark.parametrize(("script", "status"), [
    pytest.param((head(len(BODY)) + BODY[:HALF],), 502, id="half, then close"),
    pytest.param((head(len(BODY)) + BODY[:-1],), 502, id="one byte short, then close"),
    pytest.param((head(len(BODY) + 1) + BODY,), 502, id="length one too many"),
    pytest.param((head(len(BODY)) + BODY[:8],), 502, id="magic bytes only"),
    pytest.param((head(len(BODY)) + BODY[:HALF], 30.0), 504, id="half, then silence"),
    pytest.param((head(None, "Transfer-Encoding: chunked") + b"%x\r\n" % len(BODY) + BODY[:HALF],),
                 502, id="chunked, cut inside a chunk"),
    pytest.param((head(None, "Transfer-Encoding: chunked") + b"%x\r\n" % len(BODY) + BODY + b"\r\n",),
                 502, id="chunked, no last chunk"),
])
def test_truncated_body_is_an_error_then_the_key_recovers(
        mw: Any, fault_origin: FaultOrigin, script: Script, status: int) -> None:
    fault_origin.behave("/cut.png", *script)
    fails(mw, "/cut.png", status)
    recovers(mw, fault_origin, "/cut.png")


def test_failed_revalidation_serves_the_stored_bytes(mw: Any, fault_origin: FaultOrigin,
                                                    ahead: Ahead) -> None:
    """An expired entry whose origin now breaks mid-body: stale_if_error serves the exact
    stored bytes (never the origin's half body), and the entry stays intact."""
    fault_origin.behave("/stale.png", *whole(BODY, "Cache-Control: max-age=60"))
    assert call(mw, "/_fic/o/f/stale.png").status == 200
    fault_origin.behave("/stale.png", head(len(BODY)) + BODY[:HALF], 0.05, RST)
    ahead.by = 3600  # past max-age and stale_while_revalidate
    answer = call(mw, "/_fic/o/f/stale.png")
    assert_sane(answer, BODY)
    assert answer.status == 200 and "stale" in answer.headers["Cache-Status"]
    assert fault_origin.hits["/stale.png"] == 2
    ahead.by = 0
    hit = call(mw, "/_fic/o/f/stale.png")
    assert_sane(hit, BODY)
    assert hit.headers["Cache-Status"] == "fic; hit"


# --- 3. a slow drip is cut at total_timeout ----------------------------------------------------

DRIP = (head(len(BODY)) + BODY[:64], *[0.2, b"\0"] * 50)


def test_drip_is_cut_at_total_timeout_then_the_key_recovers(
        make_mw: Any, fault_origin: FaultOrigin) -> None:
    # read_timeout alone never fires: a byte comes every 0.2 s.
    mw = make_mw(origins={"f": fault_origin.base}, read_timeout="1s", total_timeout="1s")
    fault_origin.behave("/drip.png", *DRIP)
    started = time.monotonic()
    fails(mw, "/drip.png", 504)
    assert 0.9 <= time.monotonic() - started < 3
    recovers(mw, fault_origin, "/drip.png")


def test_drip_waiters_get_the_leaders_504(make_mw: Any, fault_origin: FaultOrigin) -> None:
    """Requests that waited on the dripping fetch get a clear 504 too, all within about
    one total_timeout; none hangs, none fetches again while the leader drips."""
    mw = make_mw(origins={"f": fault_origin.base}, read_timeout="1s", total_timeout="1s")
    fault_origin.behave("/drip.png", *DRIP)
    started = time.monotonic()
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda _: call(mw, "/_fic/o/f/drip.png"), range(6)))
    assert time.monotonic() - started < 4
    assert {a.status for a in answers} == {504}
    for answer in answers:
        assert_sane(answer, BODY)
    assert fault_origin.hits["/drip.png"] == 1
    assert mw.storage.stats()["entries"] == 0
    recovers(mw, fault_origin, "/drip.png")


def _header_drip(length: int) -> Script:
    """The status line, then the header bytes one at a time every 0.15 s (about 3 s)."""
    whole_head = head(length, "X-Padding: " + "p" * 8)
    steps: list[object] = [whole_head[:-20]]
    for byte in whole_head[-20:]:
        steps += [0.15, bytes((byte,))]
    return (*steps, BODY)


def test_header_drip_is_cut_at_total_timeout(make_mw: Any, fault_origin: FaultOrigin) -> None:
    mw = make_mw(origins={"f": fault_origin.base}, read_timeout="1s", total_timeout="1s")
    fault_origin.behave("/hdrip.png", *_header_drip(len(BODY)))
    started = time.monotonic()
    answer = call(mw, "/_fic/o/f/hdrip.png")
    elapsed = time.monotonic() - started
    assert_sane(answer, BODY)
    assert answer.status == 504
    assert elapsed < 2, f"cut after {elapsed:.1f} s, total_timeout is 1 s"


# --- 4. TLS: an origin whose certificate is not trusted ---------------------------------------

def test_untrusted_certificate_then_trusted(make_mw: Any, tls_origin: Origin, tls_ca: trustme.CA,
                                            tmp_path: Path) -> None:
    path = "/_fic/o/s/img/tls.png"
    untrusted = make_mw(origins={"s": tls_origin.base})  # certifi's bundle: the test CA is unknown
    for _ in range(2):
        answer = call(untrusted, path)
        assert answer.status == 502
        assert_sane(answer, png("tls.png"))
    assert untrusted.storage.stats()["entries"] == 0
    assert tls_origin.hits["/img/tls.png"] == 0  # the handshake failed before any request
    untrusted.close()

    ca_file = tmp_path / "ca.pem"
    tls_ca.cert_pem.write_to_path(str(ca_file))
    trusted = make_mw(origins={"s": tls_origin.base}, ca_bundle=str(ca_file))
    answer = call(trusted, path)
    assert_sane(answer, png("tls.png"))
    assert (answer.status, answer.headers["Cache-Status"]) == (200, "fic; fwd=miss; stored")
    assert call(trusted, path).headers["Cache-Status"] == "fic; hit"
    trusted.close()

    # What was stored over a verified connection stays served without the CA (no refetch).
    again = make_mw(origins={"s": tls_origin.base})
    answer = call(again, path)
    assert_sane(answer, png("tls.png"))
    assert answer.headers["Cache-Status"] == "fic; hit"
    assert tls_origin.hits["/img/tls.png"] == 1


def test_tls_origin_that_resets_during_the_handshake(make_mw: Any,
                                                     fault_origin: FaultOrigin) -> None:
    """https to a port that answers the ClientHello with garbage, then a reset: 502."""
    mw = make_mw(origins={"s": fault_origin.base.replace("http:", "https:")})
    fault_origin.on_connect = (b"\x15\x03\x03\x00\x02\x02\x28", 0.05, RST)  # a TLS alert
    answer = call(mw, "/_fic/o/s/hs.png")
    assert answer.status == 502
    assert_sane(answer, BODY)
    assert mw.storage.stats()["entries"] == 0
