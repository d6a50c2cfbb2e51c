"""Freshness, revalidation, stale serving, negative caching, ranges, purge, encryption."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import lmdb
import pytest
import webtest

from fic_middleware import ConfigError, FastImageCache, sign_url

from .conftest import Clock, Origin
from .images import png

NOW = 1_800_000_000.0


@pytest.fixture
def timed(make_mw: Any, clock: Clock) -> Any:
    """A middleware factory whose cache runs on a clock the test moves."""
    def make(**options: Any) -> tuple[webtest.TestApp, FastImageCache]:
        options.setdefault("forward_query", True)
        mw = make_mw(clock=clock, **options)
        return webtest.TestApp(mw), mw
    return make


# --- freshness -----------------------------------------------------------------------------

def test_hit_until_expiry_then_refetch(timed: Any, clock: Clock, origin: Origin) -> None:
    client, _ = timed(stale_while_revalidate=0, min_ttl=0)
    client.get("/_fic/o/t/img/f.png?cc=max-age%3D100")
    clock.now += 99
    response = client.get("/_fic/o/t/img/f.png?cc=max-age%3D100")
    assert response.headers["Cache-Status"] == "fic; hit"
    assert (response.headers["Age"], response.headers["Cache-Control"]) == ("99", "public, max-age=1")
    clock.now += 2
    assert client.get("/_fic/o/t/img/f.png?cc=max-age%3D100").headers["Cache-Status"] == \
        "fic; fwd=stale; stored"
    assert origin.hits["/img/f.png"] == 2


def test_ttl_is_clamped(timed: Any, clock: Clock) -> None:
    client, _ = timed(min_ttl="10m", max_ttl="1h", stale_while_revalidate=0)
    short = client.get("/_fic/o/t/img/c1.png?cc=max-age%3D5")
    assert short.headers["Cache-Control"] == "public, max-age=600"
    long = client.get("/_fic/o/t/img/c2.png?cc=max-age%3D999999")
    assert long.headers["Cache-Control"] == "public, max-age=3600"


def test_default_ttl_when_the_origin_says_nothing(timed: Any) -> None:
    client, _ = timed(default_ttl="2h", client_max_age="1d")
    response = client.get("/_fic/o/t/jpeg/x.jpg")
    assert response.headers["Cache-Control"] == "public, max-age=7200"


def test_origin_age_counts_against_freshness(timed: Any, raw_origin: Any) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, min_ttl=0)
    body = png("aged")
    raw_origin.responses["/aged.png"] = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: max-age=100\r\n"
        b"Age: 40\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    assert client.get("/_fic/o/raw/aged.png").headers["Cache-Control"] == "public, max-age=60"


# --- revalidation and stale serving ---------------------------------------------------------

def test_revalidation_uses_origin_validators_and_keeps_our_etag(timed: Any, clock: Clock,
                                                               origin: Origin) -> None:
    client, _ = timed(stale_while_revalidate=0, min_ttl=0)
    first = client.get("/_fic/o/t/img/rv.png?cc=max-age%3D10")
    clock.now += 11
    second = client.get("/_fic/o/t/img/rv.png?cc=max-age%3D10")
    assert second.headers["Cache-Status"] == "fic; fwd=stale; stored"
    assert second.headers["ETag"] == first.headers["ETag"]
    request = origin.seen[1]
    assert request.headers["If-None-Match"] and request.headers["If-Modified-Since"]
    assert client.get("/_fic/o/t/img/rv.png?cc=max-age%3D10").headers["Cache-Status"] == "fic; hit"


def test_stale_while_revalidate_serves_stale_and_refreshes_once(timed: Any, clock: Clock,
                                                                origin: Origin) -> None:
    client, mw = timed(stale_while_revalidate="60s", min_ttl=0)
    client.get("/_fic/o/t/slow/0.3/swr.png")  # default_ttl: 1 day
    clock.now += 86400 + 5  # expired 5 s ago, inside the 60 s window
    for _ in range(5):
        response = client.get("/_fic/o/t/slow/0.3/swr.png")
        assert response.headers["Cache-Status"] == "fic; hit; fwd=stale"
        assert response.headers["Cache-Control"] == "public, max-age=0"
        assert response.body == png("0.3/swr.png")
    deadline = time.monotonic() + 5  # stale is served until the one refresh has stored
    while client.get("/_fic/o/t/slow/0.3/swr.png").headers["Cache-Status"] != "fic; hit":
        assert time.monotonic() < deadline, "the background refresh never stored"
        time.sleep(0.02)
    assert origin.hits["/slow/0.3/swr.png"] == 2  # the first fetch and one refresh


def test_past_the_revalidate_window_the_client_waits(timed: Any, clock: Clock) -> None:
    client, _ = timed(stale_while_revalidate="60s")
    client.get("/_fic/o/t/img/late.png")
    clock.now += 86400 + 61
    assert client.get("/_fic/o/t/img/late.png").headers["Cache-Status"] == "fic; fwd=stale; stored"


def test_stale_if_error(timed: Any, clock: Clock, raw_origin: Any) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, stale_while_revalidate=0,
                      stale_if_error="1h")
    body = png("sie")
    raw_origin.responses["/sie.png"] = (
        b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: max-age=60\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body)
    client.get("/_fic/o/raw/sie.png")
    raw_origin.responses["/sie.png"] = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
    clock.now += 70
    response = client.get("/_fic/o/raw/sie.png")
    assert response.headers["Cache-Status"] == "fic; hit; fwd=stale; detail=stale-if-error"
    assert response.body == body
    clock.now += 3600
    client.get("/_fic/o/raw/sie.png", status=502)  # past stale_if_error


# --- what must never be served stale (issue 11, items 1 and 2) --------------------------------

def image_response(body: bytes, cache_control: str, extra: bytes = b"") -> bytes:
    return (b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nCache-Control: %s\r\n%s"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n" % (cache_control.encode(), extra,
                                                                   len(body)) + body)


def test_no_cache_entry_is_revalidated_on_every_use(timed: Any, origin: Origin) -> None:
    """The default stale_while_revalidate (60 s) used to serve a no-cache entry unasked."""
    client, _ = timed()
    first = client.get("/_fic/o/t/img/nc.png?cc=no-cache")
    assert first.headers["Cache-Control"] == "public, no-cache"
    for _ in range(3):
        again = client.get("/_fic/o/t/img/nc.png?cc=no-cache")
        assert again.headers["Cache-Status"] == "fic; fwd=stale; stored"  # asked the origin
        assert again.headers["ETag"] == first.headers["ETag"]
    assert origin.hits["/img/nc.png"] == 4
    assert all(r.headers.get("If-None-Match") for r in origin.seen[1:])  # conditional each time


@pytest.mark.parametrize("cache_control", [
    pytest.param("max-age=60, must-revalidate", id="must-revalidate"),
    pytest.param("max-age=60, Proxy-Revalidate", id="proxy-revalidate"),
    pytest.param("s-maxage=60", id="s-maxage"),
    pytest.param("no-cache", id="no-cache"),
])
def test_revalidate_entries_are_never_served_stale_on_error(timed: Any, clock: Clock, raw_origin: Any,
                                                            cache_control: str) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, stale_if_error="1d")
    raw_origin.responses["/mr.png"] = image_response(png("mr"), cache_control)
    client.get("/_fic/o/raw/mr.png")
    raw_origin.responses["/mr.png"] = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    clock.now += 61
    client.get("/_fic/o/raw/mr.png", status=502)


def test_must_revalidate_entry_is_not_served_while_revalidating(timed: Any, clock: Clock,
                                                                origin: Origin) -> None:
    client, _ = timed(stale_while_revalidate="1h", min_ttl=0)
    client.get("/_fic/o/t/img/mrw.png?cc=max-age%3D10%2C%20must-revalidate")
    clock.now += 11
    response = client.get("/_fic/o/t/img/mrw.png?cc=max-age%3D10%2C%20must-revalidate")
    assert response.headers["Cache-Status"] == "fic; fwd=stale; stored"  # the client waited
    assert response.headers["Cache-Control"] == "public, max-age=10, must-revalidate"


def test_origin_stale_while_revalidate_is_honoured_below_the_operator_cap(timed: Any, clock: Clock,
                                                                          origin: Origin) -> None:
    client, _ = timed(stale_while_revalidate="1h", min_ttl=0)
    url = "/_fic/o/t/img/oswr.png?cc=max-age%3D10%2C%20stale-while-revalidate%3D5"
    client.get(url)
    clock.now += 10 + 6  # past the origin's 5 s window, inside the operator's hour
    assert client.get(url).headers["Cache-Status"] == "fic; fwd=stale; stored"


def test_origin_stale_if_error_is_honoured_below_the_operator_cap(timed: Any, clock: Clock,
                                                                  raw_origin: Any) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, stale_while_revalidate=0,
                      stale_if_error="1d", min_ttl=0)
    raw_origin.responses["/osie.png"] = image_response(png("osie"), "max-age=10, stale-if-error=30")
    client.get("/_fic/o/raw/osie.png")
    raw_origin.responses["/osie.png"] = b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n"
    clock.now += 10 + 20
    assert client.get("/_fic/o/raw/osie.png").headers["Cache-Status"] == \
        "fic; hit; fwd=stale; detail=stale-if-error"
    clock.now += 20  # 40 s past expiry: past the origin's 30 s
    client.get("/_fic/o/raw/osie.png", status=502)


@pytest.mark.parametrize("status", [401, 403, 451, 400])
def test_an_origin_refusal_drops_the_stored_copy(timed: Any, clock: Clock, raw_origin: Any,
                                                 status: int) -> None:
    """Revoked access must take effect at the next fetch, not after stale_if_error (a day)."""
    client, _ = timed(origins={"raw": raw_origin.base}, stale_while_revalidate=0,
                      stale_if_error="1d")
    body = png("revoked")
    raw_origin.responses["/revoked.png"] = image_response(body, "max-age=60")
    client.get("/_fic/o/raw/revoked.png")
    raw_origin.responses["/revoked.png"] = b"HTTP/1.1 %d No\r\nContent-Length: 0\r\n\r\n" % status
    clock.now += 61
    client.get("/_fic/o/raw/revoked.png", status=502)
    raw_origin.responses["/revoked.png"] = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    client.get("/_fic/o/raw/revoked.png", status=502)  # the copy is gone: nothing to bridge with


def test_an_origin_404_replaces_the_stored_copy(timed: Any, clock: Clock, raw_origin: Any) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, stale_while_revalidate=0,
                      stale_if_error="1d", negative_ttl="30s")
    raw_origin.responses["/gone.png"] = image_response(png("gone"), "max-age=60")
    client.get("/_fic/o/raw/gone.png")
    raw_origin.responses["/gone.png"] = b"HTTP/1.1 410 Gone\r\nContent-Length: 0\r\n\r\n"
    clock.now += 61
    client.get("/_fic/o/raw/gone.png", status=404)
    raw_origin.responses["/gone.png"] = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    clock.now += 31
    client.get("/_fic/o/raw/gone.png", status=502)


@pytest.mark.parametrize("status", [408, 429])
def test_an_origin_asking_to_wait_keeps_the_copy_but_is_not_bridged(timed: Any, clock: Clock,
                                                                    raw_origin: Any, status: int) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, stale_while_revalidate=0,
                      stale_if_error="1d")
    raw_origin.responses["/wait.png"] = image_response(png("wait"), "max-age=60")
    client.get("/_fic/o/raw/wait.png")
    raw_origin.responses["/wait.png"] = b"HTTP/1.1 %d Wait\r\nContent-Length: 0\r\n\r\n" % status
    clock.now += 61
    client.get("/_fic/o/raw/wait.png", status=502)
    raw_origin.responses["/wait.png"] = b"HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n"
    assert client.get("/_fic/o/raw/wait.png").headers["Cache-Status"] == \
        "fic; hit; fwd=stale; detail=stale-if-error"


@pytest.mark.parametrize("cache_control", ["Private, max-age=60", "NO-STORE", "no-Store, Max-Age=60"])
def test_odd_casing_still_forbids_storing(timed: Any, origin: Origin, cache_control: str) -> None:
    client, _ = timed()
    url = "/_fic/o/t/img/case.png?cc=" + cache_control.replace(" ", "%20").replace(",", "%2C")
    first = client.get(url)
    assert first.headers["Cache-Status"] == "fic; fwd=miss"
    assert first.headers["Cache-Control"] == "no-store"
    client.get(url)
    assert origin.hits["/img/case.png"] == 2


def test_odd_casing_of_max_age_is_read(timed: Any) -> None:
    client, _ = timed(min_ttl=0)
    assert client.get("/_fic/o/t/img/mx.png?cc=Max-Age%3D5").headers["Cache-Control"] == \
        "public, max-age=5"


def test_a_304_without_cache_control_keeps_the_stored_directives(timed: Any, clock: Clock,
                                                                 raw_origin: Any) -> None:
    """RFC 9111 §4.3.4: the stored response's headers are updated, not replaced by nothing."""
    client, _ = timed(origins={"raw": raw_origin.base}, stale_while_revalidate=0, min_ttl=0,
                      default_ttl="1d")
    raw_origin.responses["/rv304.png"] = image_response(png("rv"), "max-age=10, must-revalidate",
                                                        b'ETag: "v1"\r\n')
    client.get("/_fic/o/raw/rv304.png")
    raw_origin.responses["/rv304.png"] = b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n'
    clock.now += 11
    response = client.get("/_fic/o/raw/rv304.png")
    assert response.headers["Cache-Control"] == "public, max-age=10, must-revalidate"


def test_age_sent_to_clients_counts_the_time_upstream(timed: Any, clock: Clock, raw_origin: Any) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, min_ttl=0)
    raw_origin.responses["/aged2.png"] = image_response(png("aged2"), "max-age=7200", b"Age: 3600\r\n")
    assert client.get("/_fic/o/raw/aged2.png").headers["Age"] == "3600"
    clock.now += 10
    response = client.get("/_fic/o/raw/aged2.png")
    assert (response.headers["Age"], response.headers["Cache-Control"]) == ("3610", "public, max-age=3590")


def test_a_response_that_arrives_stale_is_stored_and_revalidated(timed: Any, clock: Clock,
                                                                 raw_origin: Any) -> None:
    client, _ = timed(origins={"raw": raw_origin.base}, stale_while_revalidate=0, min_ttl="1m")
    raw_origin.responses["/old.png"] = image_response(png("old"), "max-age=60", b"Age: 60\r\n")
    response = client.get("/_fic/o/raw/old.png")
    assert (response.headers["Cache-Status"], response.headers["Cache-Control"]) == \
        ("fic; fwd=miss; stored", "public, max-age=0")
    raw_origin.responses["/old.png"] = image_response(png("old"), "max-age=61", b"Age: 60\r\n")
    clock.now += 1
    response = client.get("/_fic/o/raw/old.png")
    assert response.headers["Cache-Control"] == "public, max-age=1"  # not raised to min_ttl


# --- negative caching -----------------------------------------------------------------------

def test_origin_404_is_remembered(timed: Any, clock: Clock, origin: Origin) -> None:
    client, _ = timed(negative_ttl="30s")
    client.get("/_fic/o/t/status/404", status=404)
    response = client.get("/_fic/o/t/status/404", status=404)
    assert response.headers["Cache-Status"] == "fic; hit"
    assert origin.hits["/status/404"] == 1
    clock.now += 31
    client.get("/_fic/o/t/status/404", status=404)
    assert origin.hits["/status/404"] == 2


def test_negative_ttl_zero_remembers_nothing(timed: Any, origin: Origin) -> None:
    client, _ = timed(negative_ttl=0)
    client.get("/_fic/o/t/status/410", status=404)
    client.get("/_fic/o/t/status/410", status=404)
    assert origin.hits["/status/410"] == 2


@pytest.mark.parametrize("backend", ["lmdb", "memory"])
def test_negative_entries_never_evict_images(make_mw: Any, origin: Origin, backend: str) -> None:
    """1,500 missing paths used to push 500 images out of a max_entries=1000 cache."""
    client = webtest.TestApp(make_mw(backend=backend, max_entries=50, negative_max_entries=20))
    images = [f"/_fic/o/t/img/keep{i}.png" for i in range(50)]
    for url in images:
        client.get(url)
    for i in range(120):
        client.get(f"/_fic/o/t/status/404/missing{i}", status=404)
    assert [client.get(url).headers["Cache-Status"] for url in images] == ["fic; hit"] * 50
    # The negative store keeps the newest within its own budget.
    assert client.get("/_fic/o/t/status/404/missing119", status=404).headers["Cache-Status"] == "fic; hit"
    client.get("/_fic/o/t/status/404/missing0", status=404)
    assert origin.hits["/status/404/missing0"] == 2


def test_errors_are_not_cached(timed: Any, origin: Origin) -> None:
    client, _ = timed()
    client.get("/_fic/o/t/status/500", status=502)
    client.get("/_fic/o/t/status/500", status=502)
    assert origin.hits["/status/500"] == 2


# --- ranges ---------------------------------------------------------------------------------

IMG = "/_fic/o/t/img/range.png"


@pytest.mark.parametrize("header, status, part", [
    pytest.param("bytes=0-9", 206, slice(0, 10), id="first ten"),
    pytest.param("bytes=10-", 206, slice(10, None), id="open-ended"),
    pytest.param("bytes=-5", 206, slice(-5, None), id="suffix"),
    pytest.param("bytes=5-100000", 206, slice(5, None), id="end past the size"),
    pytest.param("bytes=0-0", 206, slice(0, 1), id="one byte"),
    pytest.param("bytes=0-1,4-5", 200, slice(None), id="several ranges: whole"),
    pytest.param("items=0-1", 200, slice(None), id="other unit: whole"),
    pytest.param("bytes=9-3", 200, slice(None), id="backwards: ignored"),
])
def test_ranges(client: webtest.TestApp, header: str, status: int, part: slice) -> None:
    response = client.get(IMG, headers={"Range": header}, status=status)
    body = png("range.png")
    assert response.body == body[part]
    assert response.headers["Content-Length"] == str(len(body[part]))
    if status == 206:
        first = range(len(body))[part][0]
        assert response.headers["Content-Range"] == f"bytes {first}-{first + len(body[part]) - 1}/{len(body)}"


@pytest.mark.parametrize("header", ["bytes=100000-", "bytes=-0"])
def test_unsatisfiable_range(client: webtest.TestApp, header: str) -> None:
    response = client.get(IMG, headers={"Range": header}, status=416)
    assert response.headers["Content-Range"] == f"bytes */{len(png('range.png'))}"


def test_if_range(client: webtest.TestApp) -> None:
    etag = client.get(IMG).headers["ETag"]
    assert client.get(IMG, headers={"Range": "bytes=0-3", "If-Range": etag}).status_int == 206
    assert client.get(IMG, headers={"Range": "bytes=0-3", "If-Range": '"old"'}).status_int == 200


def test_head_with_range(client: webtest.TestApp) -> None:
    response = client.head(IMG, headers={"Range": "bytes=0-3"}, status=206)
    assert response.body == b"" and response.headers["Content-Length"] == "4"


# --- purge ----------------------------------------------------------------------------------

def test_purge_path_url_and_all(make_mw: Any, origin: Origin) -> None:
    mw: FastImageCache = make_mw(signing_key="purge-test-key-0123456789",
                                 origin_headers={"t": {"X-Key": "k"}})
    client = webtest.TestApp(mw)
    for name in ("p1", "p2", "p3"):
        client.get(f"/_fic/o/t/img/{name}.png")
    client.get(sign_url(f"{origin.base}/img/p4.png", "purge-test-key-0123456789"))
    assert mw.purge_path("/_fic/o/t/img/p1.png") == 1
    assert mw.purge_url(f"{origin.base}/img/p2.png") == 1  # stored with the origin's headers
    assert mw.purge_url(f"{origin.base}/img/p4.png") == 1  # stored as a remote URL
    assert client.get("/_fic/o/t/img/p1.png").headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert client.get("/_fic/o/t/img/p3.png").headers["Cache-Status"] == "fic; hit"
    assert mw.purge_all() == 2  # p1 (fetched again) and p3
    assert mw.storage.stats()["entries"] == 0


def test_purge_of_something_not_stored(make_mw: Any, origin: Origin) -> None:
    mw = make_mw()
    assert mw.purge_url(f"{origin.base}/img/never.png") == 0
    with pytest.raises(ValueError):
        mw.purge_url("not a url")


# --- encryption at rest ---------------------------------------------------------------------

def stored_values(cache_dir: Path) -> list[bytes]:
    env = lmdb.open(str(cache_dir), max_dbs=8, readonly=True, lock=False)
    try:
        with env.begin(db=env.open_db(b"records", create=False)) as txn:
            return [bytes(v) for _, v in txn.cursor()]
    finally:
        env.close()


def test_encrypted_bodies_are_not_stored_in_clear(make_mw: Any, tmp_path: Path) -> None:
    mw = make_mw(encryption_key="at-rest-secret")
    client = webtest.TestApp(mw)
    body = png("secret.png")
    assert client.get("/_fic/o/t/img/secret.png").body == body
    mw.close()
    (value,) = stored_values(tmp_path / "cache")
    assert body not in value and body[16:48] not in value
    mw = make_mw(encryption_key="at-rest-secret")
    response = webtest.TestApp(mw).get("/_fic/o/t/img/secret.png")
    assert response.headers["Cache-Status"] == "fic; hit" and response.body == body


def test_other_encryption_key_is_a_miss_not_garbage(make_mw: Any, origin: Origin) -> None:
    webtest.TestApp(make_mw(encryption_key="key-one")).get("/_fic/o/t/img/k.png")
    response = webtest.TestApp(make_mw(encryption_key="key-two")).get("/_fic/o/t/img/k.png")
    assert response.body == png("k.png")
    assert response.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert origin.hits["/img/k.png"] == 2


def test_turning_encryption_off_makes_old_records_misses(make_mw: Any, origin: Origin) -> None:
    webtest.TestApp(make_mw(encryption_key="key-one")).get("/_fic/o/t/img/off.png")
    response = webtest.TestApp(make_mw()).get("/_fic/o/t/img/off.png")
    assert response.body == png("off.png") and origin.hits["/img/off.png"] == 2


def test_encryption_key_file(make_mw: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("from-a-file\n")
    mw = make_mw(encryption_key_file=str(key_file))
    assert mw.config.encryption_key == "from-a-file"
    assert "from-a-file" not in repr(mw.config)


def test_empty_encryption_key_file(make_mw: Any, tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("\n")
    with pytest.raises(ConfigError, match="^encryption_key_file:"):
        make_mw(encryption_key_file=str(key_file))


# --- background refreshes and the miss budget ------------------------------------------------

def wait_for_refreshes(mw: FastImageCache) -> None:
    deadline = time.monotonic() + 5
    while mw.cache._refreshing and time.monotonic() < deadline:
        time.sleep(0.02)


def test_background_refreshes_do_not_throttle_each_other(timed: Any, clock: Clock,
                                                         origin: Origin) -> None:
    client, mw = timed(miss_rate=0.001, miss_burst=2, min_ttl=0)
    paths = [f"/img/refresh-{n}.png" for n in range(3)]
    for n, path in enumerate(paths):  # two clients: each within its own budget of 2
        client.get(f"/_fic/o/t{path}", extra_environ={"REMOTE_ADDR": f"198.51.100.{n // 2 + 1}"})
    clock.now += 3600 + 5  # max-age=3600 ran out 5 s ago: stale while revalidating
    for path in paths:
        response = client.get(f"/_fic/o/t{path}", extra_environ={"REMOTE_ADDR": "198.51.100.9"})
        assert response.headers["Cache-Status"] == "fic; hit; fwd=stale"
    wait_for_refreshes(mw)
    assert [origin.hits[path] for path in paths] == [2, 2, 2]  # more refreshes than miss_burst


def test_background_refreshes_are_not_charged_to_a_client(timed: Any, clock: Clock,
                                                          origin: Origin) -> None:
    """A peer without an address (a unix socket) is bucketed as "": refreshes must not use
    that bucket, nor any other."""
    client, mw = timed(miss_rate=0.001, miss_burst=1, min_ttl=0)
    client.get("/_fic/o/t/img/charged.png", extra_environ={"REMOTE_ADDR": "198.51.100.1"})
    clock.now += 3600 + 5
    assert client.get("/_fic/o/t/img/charged.png").headers["Cache-Status"] == "fic; hit; fwd=stale"
    wait_for_refreshes(mw)
    assert origin.hits["/img/charged.png"] == 2
    client.get("/_fic/o/t/img/uncharged.png", status=200)  # its one miss is still there
