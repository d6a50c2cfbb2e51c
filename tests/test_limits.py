"""Abuse limits: misses per client (429), fetches in flight (503), the client's address."""

from __future__ import annotations

import ipaddress
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
import webtest

from fic_middleware.errors import Overloaded, TooManyRequests
from fic_middleware.hostlimits import PROBE, BucketTable, SlotFile, bucket_table, slot_file
from fic_middleware.limits import (
    ClusterMissLimiter, HostInflightLimiter, HostMissLimiter, InflightLimiter, MissLimiter,
    client_address,
)
from fic_middleware.redis_tier import RedisTier

from .conftest import Clock, Origin
from .servers import RedisServer

PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("::1/128"))




Limiter = Callable[..., MissLimiter]


@pytest.fixture(params=["process", "host"])
def make_limiter(request: pytest.FixtureRequest, tmp_path: Path) -> Limiter:
    """Miss limiters keeping their buckets in the process, or in a host's shared table."""
    def make(**options: Any) -> MissLimiter:
        if request.param == "host":
            return HostMissLimiter(str(tmp_path / "limits"), **options)
        return MissLimiter(**options)
    return make


def test_bucket_allows_a_burst_then_refills(make_limiter: Limiter) -> None:
    clock = Clock(1000.0)
    limiter = make_limiter(rate=2, burst=3, clock=clock)
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


def test_retry_after_is_when_a_token_is_back(make_limiter: Limiter) -> None:
    clock = Clock(1000.0)
    limiter = make_limiter(rate=0.1, burst=1, clock=clock)
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
def test_clients_sharing_a_bucket(make_limiter: Limiter, first: str, second: str) -> None:
    limiter = make_limiter(rate=0.01, burst=1, clock=Clock(1000.0))
    limiter.take(first)
    with pytest.raises(TooManyRequests):
        limiter.take(second)


@pytest.mark.parametrize("first, second", [
    pytest.param("2001:db8:1:2::1", "2001:db8:1:3::1", id="two IPv6 /64s"),
    pytest.param("198.51.100.7", "198.51.100.8", id="two IPv4 addresses (/32)"),
    pytest.param("::ffff:198.51.100.7", "::ffff:198.51.100.8", id="two IPv4-mapped addresses"),
    pytest.param("198.51.100.7", "unix:/run/app.sock", id="an address and a non-IP peer"),
])
def test_clients_with_buckets_of_their_own(make_limiter: Limiter, first: str, second: str
                                           ) -> None:
    limiter = make_limiter(rate=0.01, burst=1, clock=Clock(1000.0))
    limiter.take(first)
    limiter.take(second)


def test_configured_prefix_lengths(make_limiter: Limiter) -> None:
    limiter = make_limiter(rate=0.01, burst=1, clock=Clock(1000.0), ipv4_prefix=24, ipv6_prefix=128)
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


@pytest.mark.parametrize("where", ["process", "host"])
def test_inflight_limit(where: str, tmp_path: Path) -> None:
    limiter = (HostInflightLimiter(str(tmp_path / "inflight"), 2) if where == "host"
               else InflightLimiter(2))
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


@pytest.mark.parametrize("options, miss, inflight", [
    pytest.param({}, HostMissLimiter, HostInflightLimiter, id="lmdb: the host's"),
    pytest.param({"backend": "memory", "cache_dir": None}, MissLimiter, InflightLimiter,
                 id="memory: the process's"),
])
def test_where_the_limits_are_kept(make_mw: Any, options: dict[str, Any], miss: type,
                                   inflight: type) -> None:
    mw = make_mw(miss_rate=1, **options)
    assert (type(mw.cache.miss_limiter), type(mw.cache.inflight)) == (miss, inflight)


# --- the host's shared bucket table ---

def at(now: float) -> Callable[[], float]:
    return lambda: now


def test_table_refills_at_the_rate_up_to_the_burst(tmp_path: Path) -> None:
    table = BucketTable(str(tmp_path / "limits"))
    assert [table.take(b"k", at(100.0), 2, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert table.take(b"k", at(100.0), 2, 3) == pytest.approx(0.5)  # a token is 0.5 s at 2/s
    assert table.take(b"k", at(100.25), 2, 3) == pytest.approx(0.25)  # half a token back
    assert table.take(b"k", at(100.5), 2, 3) == 0.0
    # An hour later the bucket is full, not fuller.
    assert [table.take(b"k", at(3700.0), 2, 3) for _ in range(4)][3] == pytest.approx(0.5)


def test_table_with_no_rate_never_refills(tmp_path: Path) -> None:
    table = BucketTable(str(tmp_path / "limits"))
    table.take(b"k", at(100.0), 0, 1)
    assert table.take(b"k", at(1e6), 0, 1) == float("inf")


def test_table_bucket_from_before_the_clock_began_is_full(tmp_path: Path) -> None:
    """time.monotonic() starts again at boot; the file does not."""
    table = BucketTable(str(tmp_path / "limits"))
    table.take(b"k", at(5000.0), 0.001, 1)
    assert table.take(b"k", at(10.0), 0.001, 1) == 0.0


def test_table_keys_sharing_a_window_keep_their_own_buckets(tmp_path: Path) -> None:
    table = BucketTable(str(tmp_path / "limits"), slots=1)  # every key hashes to one window
    keys = [bytes([i]) for i in range(PROBE)]
    assert all(table.take(key, at(0.0), 0.001, 1) == 0.0 for key in keys)
    assert all(table.take(key, at(0.0), 0.001, 1) > 0 for key in keys)


def test_table_full_window_replaces_the_bucket_closest_to_full(tmp_path: Path) -> None:
    table = BucketTable(str(tmp_path / "limits"), slots=1)
    keys = [bytes([i]) for i in range(PROBE)]
    for when, key in enumerate(keys):  # keys[0] has been refilling longest
        table.take(key, at(float(when)), 0.001, 1)
    assert table.take(b"new", at(10.0), 0.001, 1) == 0.0  # in keys[0]'s slot
    assert table.take(keys[0], at(10.0), 0.001, 1) == 0.0  # a fresh bucket (in keys[1]'s slot)
    assert all(table.take(key, at(10.0), 0.001, 1) > 0 for key in keys[2:])


def test_table_is_kept_across_opens(tmp_path: Path) -> None:
    BucketTable(str(tmp_path / "limits")).take(b"k", at(100.0), 0.001, 1)
    assert BucketTable(str(tmp_path / "limits")).take(b"k", at(100.0), 0.001, 1) > 0


def test_a_file_of_another_format_becomes_an_empty_table(tmp_path: Path) -> None:
    (tmp_path / "limits").write_bytes(b"not a table" * 100)
    table = BucketTable(str(tmp_path / "limits"))
    assert table.take(b"k", at(100.0), 0.001, 1) == 0.0


def test_limiters_of_one_process_share_its_table(tmp_path: Path) -> None:
    path = str(tmp_path / "limits")
    assert bucket_table(path) is bucket_table(str(tmp_path / "." / "limits"))
    first = HostMissLimiter(path, rate=0.01, burst=1)
    first.take("198.51.100.7")
    with pytest.raises(TooManyRequests):
        HostMissLimiter(path, rate=0.01, burst=1).take("198.51.100.7")


_SHARED_BURST = 30_000


def _drain(path: str, tries: int, start: Any, results: Any) -> None:
    """In another process: try ``tries`` takes of one bucket that never refills, on the
    host's clock (a process must not see a time older than another's as a new boot)."""
    table = bucket_table(path)
    start.wait()  # both processes are ready: they take at the same time
    results.put(sum(table.take(b"k", time.monotonic, 0.0, _SHARED_BURST) == 0.0
                    for _ in range(tries)))


def test_two_processes_never_take_the_same_token(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    start, results = context.Barrier(2), context.Queue()
    path = str(tmp_path / "limits")
    BucketTable(path)  # made before the race
    workers = [context.Process(target=_drain, args=(path, 20_000, start, results))
               for _ in range(2)]
    for worker in workers:
        worker.start()
    taken = [results.get(timeout=60) for _ in workers]
    for worker in workers:
        worker.join()
    assert sum(taken) == _SHARED_BURST


# --- the host's in-flight slots ---

def _hold_slot(path: str, held: Any) -> None:
    """In another process: hold the one slot until killed."""
    slots = slot_file(path)  # kept: the slot is held as long as the file is open
    assert slots.acquire(1) == 0
    held.set()
    time.sleep(60)


@pytest.fixture
def slot_holder(tmp_path: Path) -> Any:
    """Another process holding the only slot of ``tmp_path/inflight``. Killed at the end
    (not told: an Event's set() waits for every waiter, and a killed one never wakes)."""
    context = multiprocessing.get_context("spawn")
    held = context.Event()
    process = context.Process(target=_hold_slot, args=(str(tmp_path / "inflight"), held))
    process.start()
    assert held.wait(30)
    yield process
    process.kill()
    process.join()


def test_a_slot_held_by_another_process_is_not_free(slot_holder: Any, tmp_path: Path) -> None:
    with pytest.raises(Overloaded):
        with HostInflightLimiter(str(tmp_path / "inflight"), 1).slot():
            pass


def test_a_killed_process_gives_its_slot_back(slot_holder: Any, tmp_path: Path) -> None:
    os.kill(slot_holder.pid, signal.SIGKILL)
    slot_holder.join()
    with HostInflightLimiter(str(tmp_path / "inflight"), 1).slot():
        pass


def test_limiters_of_one_process_share_its_slots(tmp_path: Path) -> None:
    """fcntl locks are the process's: two limiters on one file must not both count on them."""
    path = str(tmp_path / "inflight")
    assert isinstance(slot_file(path), SlotFile)
    with HostInflightLimiter(path, 1).slot():
        with pytest.raises(Overloaded):
            with HostInflightLimiter(path, 1).slot():
                pass


# --- the cluster's buckets in Redis ---

REDIS_KEY = b"test-redis-key"


@pytest.fixture
def tiers(redis_server: RedisServer) -> Any:
    """Redis tiers standing for separate hosts' connections to one redis-server."""
    made: list[RedisTier] = []

    def make() -> RedisTier:
        made.append(RedisTier(redis_server.url, REDIS_KEY, lock_ttl=5))
        return made[-1]
    yield make
    for tier in made:
        tier.close()


def test_hosts_sharing_redis_share_a_bucket(tiers: Any, tmp_path: Path) -> None:
    a, b = (ClusterMissLimiter(tiers(), HostMissLimiter(str(tmp_path / name), rate=0.01, burst=2))
            for name in ("a", "b"))
    a.take("198.51.100.7")
    b.take("198.51.100.7")
    with pytest.raises(TooManyRequests):
        a.take("198.51.100.7")
    b.take("198.51.100.8")  # another client has its own bucket


def test_redis_bucket_retry_after_is_when_a_token_is_back(tiers: Any) -> None:
    limiter = ClusterMissLimiter(tiers(), MissLimiter(rate=0.1, burst=1))
    limiter.take("198.51.100.7")
    with pytest.raises(TooManyRequests) as info:
        limiter.take("198.51.100.7")
    assert info.value.retry_after == 10


def test_redis_bucket_expires_once_it_would_be_full(tiers: Any, redis_server: RedisServer
                                                    ) -> None:
    limiter = ClusterMissLimiter(tiers(), MissLimiter(rate=0.1, burst=1))
    limiter.take("198.51.100.7")
    client = redis.Redis.from_url(redis_server.url)
    try:
        names = client.keys("fic:miss:*")
        assert len(names) == 1
        assert 0 < client.pttl(names[0]) <= 11_000  # 10 s to refill, and a second
    finally:
        client.close()


def test_without_redis_misses_are_counted_on_the_host(
        make_mw: Any, redis_server: RedisServer, caplog: pytest.LogCaptureFixture) -> None:
    redis_server.stop()
    mw = make_mw(miss_rate=0.01, miss_burst=1, redis_url=redis_server.url,
                 redis_key=REDIS_KEY.decode())
    client = webtest.TestApp(mw, extra_environ={"REMOTE_ADDR": "198.51.100.7"})
    with caplog.at_level(logging.WARNING, logger="fic_middleware"):
        client.get("/_fic/o/t/img/f1.png")
        client.get("/_fic/o/t/img/f2.png", status=429)
        client.get("/_fic/o/t/img/f3.png", status=429)
    fallbacks = [r for r in caplog.records if "counting misses on this host" in r.getMessage()]
    assert len(fallbacks) == 1
    assert mw.cache.stats.redis_failures >= 1
