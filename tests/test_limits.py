"""Abuse limits: misses per client (429), fetches in flight (503), the client's address."""

from __future__ import annotations

import ipaddress
import threading
import time
from typing import Any

import pytest
import webtest

from fic_middleware.errors import Overloaded, TooManyRequests
from fic_middleware.limits import InflightLimiter, MissLimiter, client_address

from .conftest import Origin

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_bucket_allows_a_burst_then_refills() -> None:
    clock = Clock()
    limiter = MissLimiter(rate=2, burst=3, clock=clock)
    for _ in range(3):
        limiter.take("a")
    with pytest.raises(TooManyRequests) as info:
        limiter.take("a")
    assert info.value.retry_after == 1
    limiter.take("b")  # another client has its own bucket
    clock.now += 0.5  # one token back at 2/s
    limiter.take("a")
    with pytest.raises(TooManyRequests):
        limiter.take("a")


def test_retry_after_is_when_a_token_is_back() -> None:
    clock = Clock()
    limiter = MissLimiter(rate=0.1, burst=1, clock=clock)
    limiter.take("a")
    with pytest.raises(TooManyRequests) as info:
        limiter.take("a")
    assert info.value.retry_after == 10


@pytest.mark.parametrize("first, second", [
    pytest.param("2001:db8:1:2::1", "2001:db8:1:2:ffff:1:2:3", id="one IPv6 /64"),
    pytest.param("2001:db8:1:2::1", "2001:DB8:1:2:0::1", id="two spellings of one IPv6 address"),
    pytest.param("198.51.100.7", "::ffff:198.51.100.7", id="IPv4 and its IPv4-mapped form"),
    pytest.param("fe80::1%eth0", "fe80::2%eth1", id="link-local, zone ids aside"),
    pytest.param("unix:/run/app.sock", "unix:/run/app.sock", id="a non-IP peer is its own bucket"),
])
def test_clients_sharing_a_bucket(first: str, second: str) -> None:
    limiter = MissLimiter(rate=0.01, burst=1, clock=Clock())
    limiter.take(first)
    with pytest.raises(TooManyRequests):
        limiter.take(second)


@pytest.mark.parametrize("first, second", [
    pytest.param("2001:db8:1:2::1", "2001:db8:1:3::1", id="two IPv6 /64s"),
    pytest.param("198.51.100.7", "198.51.100.8", id="two IPv4 addresses (/32)"),
    pytest.param("::ffff:198.51.100.7", "::ffff:198.51.100.8", id="two IPv4-mapped addresses"),
    pytest.param("198.51.100.7", "unix:/run/app.sock", id="an address and a non-IP peer"),
])
def test_clients_with_buckets_of_their_own(first: str, second: str) -> None:
    limiter = MissLimiter(rate=0.01, burst=1, clock=Clock())
    limiter.take(first)
    limiter.take(second)


def test_configured_prefix_lengths() -> None:
    limiter = MissLimiter(rate=0.01, burst=1, clock=Clock(), ipv4_prefix=24, ipv6_prefix=128)
    limiter.take("198.51.100.7")
    with pytest.raises(TooManyRequests):
        limiter.take("198.51.100.200")  # one /24
    limiter.take("198.51.101.7")
    limiter.take("2001:db8:1:2::1")
    limiter.take("2001:db8:1:2::2")  # one /64, but /128 buckets


def test_one_ipv6_64_rotating_its_interface_id_gets_429(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(miss_rate=0.01, miss_burst=1))
    client.get("/_fic/o/t/img/v1.png", extra_environ={"REMOTE_ADDR": "2001:db8:7:7::1"})
    client.get("/_fic/o/t/img/v2.png", extra_environ={"REMOTE_ADDR": "2001:db8:7:7::2"}, status=429)
    client.get("/_fic/o/t/img/v2.png", extra_environ={"REMOTE_ADDR": "2001:db8:7:8::1"}, status=200)


def test_inflight_limit() -> None:
    limiter = InflightLimiter(2)
    with limiter.slot(), limiter.slot():
        with pytest.raises(Overloaded) as info:
            with limiter.slot():
                pass
        assert info.value.retry_after == 1
    with limiter.slot():  # slots come back
        pass


@pytest.mark.parametrize("remote, forwarded, expected", [
    pytest.param("203.0.113.9", "198.51.100.1", "203.0.113.9", id="untrusted peer: XFF ignored"),
    pytest.param("10.0.0.1", "198.51.100.1", "198.51.100.1", id="trusted proxy"),
    pytest.param("10.0.0.1", "6.6.6.6, 198.51.100.1", "198.51.100.1", id="spoofed left part ignored"),
    pytest.param("10.0.0.1", "198.51.100.1, 10.0.0.2", "198.51.100.1", id="chain of proxies"),
    pytest.param("10.0.0.1", "10.0.0.3, 10.0.0.2", "10.0.0.3", id="all trusted"),
    pytest.param("10.0.0.1", "garbage", "10.0.0.1", id="malformed hop"),
    pytest.param("10.0.0.1", None, "10.0.0.1", id="no header"),
    pytest.param("::1", "2001:db8::1", "2001:db8::1", id="IPv6"),
])
def test_client_address(remote: str, forwarded: str | None, expected: str) -> None:
    assert client_address(remote, forwarded, PROXIES) == expected


def test_client_address_without_trusted_proxies_is_remote_addr() -> None:
    assert client_address("10.0.0.1", "198.51.100.1", ()) == "10.0.0.1"


def test_misses_over_the_rate_get_429(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(miss_rate=0.01, miss_burst=2),
                             extra_environ={"REMOTE_ADDR": "198.51.100.7"})
    client.get("/_fic/o/t/img/r1.png")
    client.get("/_fic/o/t/img/r2.png")
    response = client.get("/_fic/o/t/img/r3.png", status=429)
    assert int(response.headers["Retry-After"]) >= 1
    assert "r3" not in str(origin.hits)
    # Hits cost nothing; another client has its own budget.
    client.get("/_fic/o/t/img/r1.png", status=200)
    client.get("/_fic/o/t/img/r3.png", extra_environ={"REMOTE_ADDR": "198.51.100.8"}, status=200)


def test_rate_limit_follows_trusted_proxies(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(miss_rate=0.01, miss_burst=1, trusted_proxies="10.0.0.0/8"),
                             extra_environ={"REMOTE_ADDR": "10.0.0.1"})
    client.get("/_fic/o/t/img/p1.png", headers={"X-Forwarded-For": "198.51.100.1"})
    client.get("/_fic/o/t/img/p2.png", headers={"X-Forwarded-For": "198.51.100.2"})
    client.get("/_fic/o/t/img/p3.png", headers={"X-Forwarded-For": "198.51.100.1"}, status=429)


def test_too_many_fetches_in_flight_get_503(make_mw: Any, origin: Origin) -> None:
    mw = make_mw(max_inflight_fetches=1, read_timeout="5s")
    slow = threading.Thread(target=lambda: webtest.TestApp(mw).get("/_fic/o/t/slow/1/x.png"))
    slow.start()
    try:
        deadline = time.monotonic() + 5
        while not origin.hits["/slow/1/x.png"] and time.monotonic() < deadline:
            time.sleep(0.01)
        response = webtest.TestApp(mw).get("/_fic/o/t/img/other.png", status=503)
        assert response.headers["Retry-After"] == "1"
        assert not origin.hits["/img/other.png"]
    finally:
        slow.join()
    webtest.TestApp(mw).get("/_fic/o/t/img/other.png", status=200)
