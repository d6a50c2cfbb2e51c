"""The address policy, and that a refused address is refused before any socket opens.

Name resolution is stubbed and the socket factory is replaced by a trap, so a wrong
answer from the code under test fails the test instead of sending a packet.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest
import webtest

from fic_middleware import FastImageCache, netguard
from fic_middleware.fetch import Fetcher
from fic_middleware.netguard import AddressPolicy, is_public

from .conftest import downstream

REFUSED = [
    "127.0.0.1", "127.255.255.254", "0.0.0.0", "10.1.2.3", "172.16.0.1", "192.168.1.1",
    "169.254.169.254", "100.64.0.1", "100.127.255.254", "224.0.0.1", "239.255.255.250",
    "240.0.0.1", "255.255.255.255", "192.0.2.1", "198.18.0.1",
    "::", "::1", "fe80::1", "fc00::1", "fd00::7", "fec0::1", "ff02::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "::127.0.0.1",
    "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "2002:7f00:1::1", "2002:a9fe:a9fe::1",
    "2001:0:4136:e378:8000:63bf:80ff:fffe",
]
PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "2606:4700:4700::1111", "2001:4860:4860::8888"]


@pytest.mark.parametrize("address", REFUSED)
def test_refused(address: str) -> None:
    assert not AddressPolicy().allows(address)


@pytest.mark.parametrize("address", PUBLIC)
def test_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))
    assert AddressPolicy().allows(address)


def test_allowed_networks_exempt_explicitly() -> None:
    policy = AddressPolicy([ipaddress.ip_network("127.0.0.1/32")])
    assert policy.allows("127.0.0.1") and policy.allows("::ffff:127.0.0.1")
    assert not policy.allows("127.0.0.2") and not policy.allows("10.0.0.1")


class Trap:
    """Stands in for urllib3's create_connection: records, never connects."""

    def __init__(self) -> None:
        self.calls: list[Any] = []

    def __call__(self, address: Any, *args: Any, **kwargs: Any) -> Any:
        self.calls.append(address)
        raise AssertionError(f"a socket was opened to {address}")


@pytest.fixture
def trap(monkeypatch: pytest.MonkeyPatch) -> Trap:
    trap = Trap()
    monkeypatch.setattr(netguard, "create_connection", trap)
    return trap


def middleware_resolving_to(addresses: list[str], **options: Any) -> FastImageCache:
    options = {"backend": "memory", "retries": 2, **options}
    mw = FastImageCache(downstream, origins={"evil": "http://evil.test", "tls": "https://evil.test"},
                        **options)
    mw.fetcher = Fetcher(mw.config, resolver=lambda host, port: addresses)
    mw.cache.fetcher = mw.fetcher
    return mw


@pytest.mark.parametrize("address", ["10.1.2.3", "169.254.169.254", "127.0.0.1", "::1",
                                     "::ffff:127.0.0.1", "100.64.0.1"])
@pytest.mark.parametrize("origin", ["evil", "tls"])
def test_name_resolving_to_a_refused_address_gets_403_without_a_socket(
        trap: Trap, address: str, origin: str) -> None:
    client = webtest.TestApp(middleware_resolving_to([address]))
    response = client.get(f"/_fic/o/{origin}/a.png", status=403)
    assert address not in response.text
    assert trap.calls == []


def test_one_refused_address_among_public_ones_refuses_the_name(trap: Trap) -> None:
    client = webtest.TestApp(middleware_resolving_to(["93.184.216.34", "10.0.0.1"]))
    client.get("/_fic/o/evil/a.png", status=403)
    assert trap.calls == []


def test_connects_to_the_checked_address_not_the_name(trap: Trap) -> None:
    """No second lookup: the socket target is the address the policy approved."""
    client = webtest.TestApp(middleware_resolving_to(["93.184.216.34"], retries=0))
    client.get("/_fic/o/evil/a.png", status=500)  # the trap's AssertionError, caught
    assert trap.calls == [("93.184.216.34", 80)]
