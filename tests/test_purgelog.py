"""The purge log against a real redis-server: each host's follower applies the others'
purges to its L1, catches up after being away, and drops its L1 when the log no longer
reaches back far enough."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import webtest

from fic_middleware import FastImageCache
from fic_middleware.purgelog import PurgeLog

from .conftest import Origin
from .servers import RedisServer, free_port

KEY1, KEY2, KEY3 = b"1" * 16, b"2" * 16, b"3" * 16


class Host:
    """A purge log over a cache directory whose L1 is a list of what it was told to forget."""

    def __init__(self, url: str, cache_dir: Path) -> None:
        cache_dir.mkdir(exist_ok=True)
        self.forgotten: list[bytes] = []
        self.emptied = 0
        self.log = PurgeLog(url, str(cache_dir), self.forgotten.extend, self.empty)

    def empty(self) -> int:
        self.emptied += 1
        return 0


@pytest.fixture
def host(redis_server: RedisServer, tmp_path: Path) -> Iterator[Callable[[str], Host]]:
    made: list[Host] = []

    def make(name: str) -> Host:
        made.append(Host(redis_server.url, tmp_path / name))
        return made[-1]
    yield make
    for h in made:
        h.log.close()


def eventually(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Poll ``check`` (a bounded loop: the follower works in its own thread)."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_purge_reaches_the_other_hosts_follower(host: Callable[[str], Host]) -> None:
    a, b = host("a"), host("b")
    b.log.start()
    assert a.log.publish([KEY1, KEY2])
    assert eventually(lambda: b.forgotten == [KEY1, KEY2])


def test_purge_all_empties_the_other_hosts(host: Callable[[str], Host]) -> None:
    a, b = host("a"), host("b")
    b.log.start()
    emptied_at_start = b.emptied  # a first start empties the L1 (nothing saved yet)
    assert a.log.publish_all()
    assert eventually(lambda: b.emptied == emptied_at_start + 1)


def test_a_host_does_not_apply_its_own_purges_again(host: Callable[[str], Host]) -> None:
    a, b = host("a"), host("b")
    a.log.start()
    a.log.publish([KEY1])
    b.log.publish([KEY2])
    assert eventually(lambda: a.forgotten == [KEY2])


def test_a_returning_host_catches_up_before_serving(host: Callable[[str], Host]) -> None:
    a, b = host("a"), host("b")
    b.log.start()
    b.log.close()  # the host goes down, its position saved
    a.log.publish([KEY1])
    a.log.publish([KEY2])
    returning = host("b")
    returning.log.start()  # no polling: start() returns caught up
    assert returning.forgotten == [KEY1, KEY2]
    assert returning.emptied == 0


def test_a_host_behind_a_trimmed_log_empties_its_l1(host: Callable[[str], Host],
                                                     redis_server: RedisServer) -> None:
    a, b = host("a"), host("b")
    b.log.start()
    b.log.close()
    for key in (KEY1, KEY2, KEY3):
        a.log.publish([key])
    client = redis.Redis.from_url(redis_server.url)
    client.xtrim(a.log.stream, maxlen=1, approximate=False)  # KEY1 and KEY2 are gone
    client.close()
    returning = host("b")
    returning.log.start()
    assert (returning.emptied, returning.forgotten) == (1, [])


def test_a_host_behind_a_log_trimmed_to_nothing_empties_its_l1(
        host: Callable[[str], Host], redis_server: RedisServer) -> None:
    a, b = host("a"), host("b")
    b.log.start()
    b.log.close()
    a.log.publish([KEY1])
    client = redis.Redis.from_url(redis_server.url)
    client.xtrim(a.log.stream, maxlen=0, approximate=False)
    client.close()
    returning = host("b")
    returning.log.start()
    assert (returning.emptied, returning.forgotten) == (1, [])


def test_a_host_empties_its_l1_when_redis_lost_the_log(host: Callable[[str], Host],
                                                       redis_server: RedisServer) -> None:
    a, b = host("a"), host("b")
    a.log.publish([KEY1])
    b.log.start()
    b.log.close()
    redis_server.stop()  # no persistence: the log is gone, and the purges with it
    redis_server.start()
    returning = host("b")
    returning.log.start()
    assert returning.emptied == 1


def test_a_first_start_empties_the_l1(host: Callable[[str], Host]) -> None:
    """Without a saved position, nothing says which purges this L1 missed."""
    b = host("b")
    b.log.start()
    assert b.emptied == 1


def test_an_entry_this_version_cannot_read_empties_the_l1(host: Callable[[str], Host]) -> None:
    a, b = host("a"), host("b")
    b.log.start()
    a.log._publish(b"prefix", b"https://images.example.com/")  # e.g. from a newer release
    assert eventually(lambda: b.emptied == 2)
    assert b.forgotten == []


def test_one_follower_per_host_and_another_takes_over(host: Callable[[str], Host]) -> None:
    first, second, other = host("b"), host("b"), host("a")
    first.log.start()
    second.log.start()
    holds = [lambda: first.log._lock_fd is not None, lambda: second.log._lock_fd is not None]
    assert eventually(lambda: any(held() for held in holds))
    follower, idle = (first, second) if holds[0]() else (second, first)
    other.log.publish([KEY1])
    assert eventually(lambda: follower.forgotten == [KEY1])
    assert idle.forgotten == [] and idle.log._lock_fd is None
    follower.log.close()  # the follower's process dies: the kernel frees its lock
    other.log.publish([KEY2])
    assert eventually(lambda: idle.forgotten == [KEY2])  # from the host's saved position


def test_redis_down_is_counted_not_raised(tmp_path: Path) -> None:
    failures: list[int] = []
    log = PurgeLog(f"redis://127.0.0.1:{free_port()}/0", str(tmp_path), list, lambda: 0,
                   on_failure=lambda: failures.append(1))
    log.start()
    assert not log.publish([KEY1])
    log.close()
    assert len(failures) >= 2 and log.failures == len(failures)


# --- through the middleware: two hosts in one process, the Python API --------------------

def status(app: FastImageCache, path: str) -> str:
    return str(webtest.TestApp(app).get(path).headers["Cache-Status"])


def test_purge_url_reaches_the_other_hosts_l1(hosts: Any, origin: Origin) -> None:
    a, b = hosts("a"), hosts("b")
    status(a, "/_fic/o/t/img/p.png")
    assert status(b, "/_fic/o/t/img/p.png") == "fic; hit; detail=shared"  # now in b's L1
    a.purge_url(f"{origin.base}/img/p.png")
    assert eventually(lambda: b.storage.stats()["entries"] == 0)
    assert status(b, "/_fic/o/t/img/p.png") == "fic; fwd=miss; stored"


def test_purge_all_reaches_the_other_hosts_l1(hosts: Any, origin: Origin) -> None:
    a, b = hosts("a"), hosts("b")
    status(a, "/_fic/o/t/img/all.png")
    status(b, "/_fic/o/t/img/all.png")
    a.purge_all()
    assert eventually(lambda: b.storage.stats()["entries"] == 0)
    assert status(b, "/_fic/o/t/img/all.png") == "fic; fwd=miss; stored"


def test_purge_all_keeps_the_log(hosts: Any, origin: Origin) -> None:
    """Clearing the Redis tier must not clear the log: hosts read "all" in it, not a gap."""
    a, b = hosts("a"), hosts("b")
    status(b, "/_fic/o/t/img/keep.png")
    assert b.parts.tiers.purges is not None
    resyncs = b.parts.tiers.purges.resyncs  # its first start
    a.purge_url(f"{origin.base}/img/keep.png")
    a.purge_all()
    assert eventually(lambda: b.parts.tiers.purges is not None and b.parts.tiers.purges.applied == 2)
    assert b.parts.tiers.purges.resyncs == resyncs
