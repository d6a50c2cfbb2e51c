"""SSRF vectors against real listeners on internal addresses, in a private namespace:
each must be refused with the contract's status, and no trap may see a connection."""

from __future__ import annotations

import socket
import time
from urllib.parse import quote

import pytest
import webtest

from fic_middleware import FastImageCache, sign_url

from ..conftest import downstream
from ..images import png
from .conftest import PUBLIC, TRAP_ADDRESSES, Traps

KEY = "netns-signing-key-0123456789"

# Every spelling here reaches a trap if the address policy lets it through.
INTERNAL = [
    "http://127.0.0.1:8080", "http://127.1:8080", "http://0x7f.1:8080", "http://0x7f000001:8080",
    "http://2130706433:8080", "http://0177.0.0.1:8080", "http://017700000001:8080",
    "http://127.000.000.001:8080", "http://0:8080", "http://0.0.0.0:8080",
    "http://localhost:8080", "http://LOCALHOST:8080", "http://localhost.:8080",
    "http://[::1]:8080", "http://[::ffff:127.0.0.1]:8080", "http://[::ffff:7f00:1]:8080",
    "http://[0:0:0:0:0:ffff:127.0.0.1]:8080",
    "http://169.254.169.254", "http://metadata.test", "http://[::ffff:169.254.169.254]",
    "http://[::ffff:a9fe:a9fe]", "http://2852039166", "http://0xa9.0xfe.0xa9.0xfe",
    "http://10.1.2.3", "http://internal.test", "http://012.1.2.3", "http://mixed.test",
    "http://192.168.7.7", "http://172.16.5.5", "http://100.64.1.1",
    "http://[fd00::7]", "http://v6internal.test",
    "https://127.0.0.1", "https://metadata.test", "https://[::1]",
]


def test_traps_catch_connections(traps: Traps) -> None:
    """Positive control: a direct connection to a trap is recorded."""
    for address in TRAP_ADDRESSES:
        with socket.create_connection((address, 80), timeout=2):
            pass
    deadline = time.monotonic() + 2
    while len(traps.hits) < len(TRAP_ADDRESSES) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert sorted(traps.hits) == sorted((a, 80) for a in TRAP_ADDRESSES)


def test_public_address_is_allowed(public_base: str, traps: Traps) -> None:
    """Control: the policy lets a public address through (here, on lo)."""
    client = webtest.TestApp(FastImageCache(downstream, backend="memory", origins={"p": public_base}))
    assert client.get("/_fic/o/p/a.png").body == png("/a.png")
    assert traps.hits == []


def test_allowed_networks_reach_a_trap(traps: Traps) -> None:
    """Control: exempting the network does connect, so a refusal below is the policy's."""
    client = webtest.TestApp(FastImageCache(downstream, backend="memory", retries=0,
                                            origins={"v": "http://10.1.2.3"},
                                            allowed_networks=["10.1.2.3/32"]))
    client.get("/_fic/o/v/a.png", status=502)
    assert traps.hits == [("10.1.2.3", 80)]


@pytest.mark.parametrize("base", INTERNAL)
def test_mapped_origin_to_an_internal_address(base: str, traps: Traps) -> None:
    client = webtest.TestApp(FastImageCache(downstream, backend="memory", origins={"v": base}))
    response = client.get("/_fic/o/v/latest/meta-data.png", expect_errors=True)
    assert response.status_int == 403, response.text
    assert traps.hits == []


@pytest.mark.parametrize("base", INTERNAL)
def test_signed_url_to_an_internal_address(base: str, traps: Traps) -> None:
    client = webtest.TestApp(FastImageCache(downstream, backend="memory", signing_key=KEY))
    response = client.get(sign_url(f"{base}/latest/meta-data.png", KEY), expect_errors=True)
    assert response.status_int == 403, response.text
    assert traps.hits == []


@pytest.mark.parametrize("target", INTERNAL)
def test_redirect_to_an_internal_address(target: str, public_base: str, traps: Traps) -> None:
    client = webtest.TestApp(FastImageCache(downstream, backend="memory", signing_key=KEY))
    url = f"{public_base}/goto?to={quote(target + '/x.png', safe='')}"
    response = client.get(sign_url(url, KEY), expect_errors=True)
    assert response.status_int == 403, response.text
    assert traps.hits == []


def test_redirect_between_public_addresses_is_followed(public_base: str, traps: Traps) -> None:
    client = webtest.TestApp(FastImageCache(downstream, backend="memory", signing_key=KEY))
    url = f"{public_base}/goto?to={quote(f'http://{PUBLIC}:8081/b.png', safe='')}"
    assert client.get(sign_url(url, KEY)).body == png("/b.png")
    assert traps.hits == []


@pytest.mark.parametrize("target", ["http://169.254.169.254/x.png", "http://127.0.0.1:8080/x.png"])
def test_origin_headers_never_leak_to_a_redirect(target: str, public_base: str, traps: Traps) -> None:
    client = webtest.TestApp(FastImageCache(
        downstream, backend="memory", origins={"p": public_base}, forward_query=True,
        origin_headers={"p": {"Authorization": "Bearer secret"}}))
    client.get(f"/_fic/o/p/goto?to={quote(target, safe='')}", status=403)
    assert traps.hits == []
