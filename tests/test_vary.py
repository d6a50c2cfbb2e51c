"""Vary from the origin: one variant per Accept class for ``Vary: Accept``, nothing stored
for any other Vary (RFC 9111 §4.1)."""

from __future__ import annotations

from typing import Any

import pytest
import webtest

from fic_middleware.routing import ACCEPTS

from .conftest import Origin
from .images import png

# What browsers send for images (Chrome, Safari 16+ with AVIF; an older one with WebP only).
AVIF = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
WEBP = "image/webp,*/*"
OTHER = "*/*"


@pytest.fixture
def client(make_mw: Any) -> webtest.TestApp:
    return webtest.TestApp(make_mw(forward_query=True))


def get(client: webtest.TestApp, path: str, accept: str) -> webtest.TestResponse:
    return client.get(f"/_fic/o/t/negotiate/{path}", headers={"Accept": accept})


def test_two_accept_classes_stored_as_two_variants(client: webtest.TestApp,
                                                   origin: Origin) -> None:
    get(client, "v1.png", AVIF)
    get(client, "v1.png", WEBP)
    avif, webp = get(client, "v1.png", AVIF), get(client, "v1.png", WEBP)
    assert origin.hits["/negotiate/v1.png"] == 2
    assert (avif.headers["Cache-Status"], webp.headers["Cache-Status"]) == ("fic; hit",) * 2
    assert avif.body == png(f"v1.png|{ACCEPTS['avif']}")
    assert webp.body == png(f"v1.png|{ACCEPTS['webp']}")


def test_origin_sees_the_class_accept_not_the_client_header(client: webtest.TestApp,
                                                           origin: Origin) -> None:
    get(client, "v2.png", AVIF + ",text/x-client-detail")
    get(client, "v2.png", OTHER)
    assert [r.headers["Accept"] for r in origin.seen] == [ACCEPTS["avif"], ACCEPTS["other"]]


def test_variant_answers_vary_accept(client: webtest.TestApp) -> None:
    get(client, "v3.png", WEBP)
    hit = get(client, "v3.png", WEBP)
    assert hit.headers["Cache-Status"] == "fic; hit"
    assert hit.headers["Vary"] == "Accept"


def test_clients_of_one_class_share_the_variant(client: webtest.TestApp, origin: Origin) -> None:
    get(client, "v4.png", AVIF)
    res = get(client, "v4.png", "image/avif,*/*")
    assert res.headers["Cache-Status"] == "fic; hit"
    assert res.body == png(f"v4.png|{ACCEPTS['avif']}")
    assert origin.hits["/negotiate/v4.png"] == 1


def test_url_without_vary_is_one_entry_for_every_class(client: webtest.TestApp,
                                                       origin: Origin) -> None:
    client.get("/_fic/o/t/img/v5.png", headers={"Accept": AVIF})
    res = client.get("/_fic/o/t/img/v5.png", headers={"Accept": OTHER})
    assert res.headers["Cache-Status"] == "fic; hit"
    assert "Vary" not in res.headers
    # Fetched once, with the Accept of the client that missed.
    assert [r.headers["Accept"] for r in origin.seen] == [ACCEPTS["avif"]]


@pytest.mark.parametrize("vary", [
    pytest.param("Cookie", id="cookie"),
    pytest.param("*", id="star"),
    pytest.param("Accept, Cookie", id="accept-and-more"),
    pytest.param("Accept-Encoding", id="accept-encoding"),
])
def test_other_vary_is_not_stored(client: webtest.TestApp, origin: Origin, vary: str) -> None:
    first = get(client, f"n.png?vary={vary}", AVIF)
    second = get(client, f"n.png?vary={vary}", AVIF)
    assert origin.hits["/negotiate/n.png"] == 2
    for res in (first, second):
        assert res.headers["Cache-Status"] == "fic; fwd=miss"
        assert res.headers["Cache-Control"] == "no-store"


def test_purge_removes_every_variant(make_mw: Any, origin: Origin) -> None:
    mw = make_mw()
    client = webtest.TestApp(mw)
    get(client, "v6.png", AVIF)
    get(client, "v6.png", OTHER)
    assert mw.purge_path("/_fic/o/t/negotiate/v6.png") == 3  # the marker and two variants
    assert get(client, "v6.png", AVIF).headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert origin.hits["/negotiate/v6.png"] == 3
