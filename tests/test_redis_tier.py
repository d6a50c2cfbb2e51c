"""The Redis tier against a real redis-server: hosts share fetches, and a dead Redis costs
nothing but the sharing."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis
import webtest

from fic_middleware import ConfigError
from fic_middleware.record import Entry, encode, strong_etag

from .conftest import REDIS_KEY, Origin
from .images import png
from .servers import RedisServer



def test_second_host_is_served_from_redis(hosts: Any, origin: Origin) -> None:
    a, b = webtest.TestApp(hosts("a")), webtest.TestApp(hosts("b"))
    assert a.get("/_fic/o/t/img/shared.png").headers["Cache-Status"] == "fic; fwd=miss; stored"
    response = b.get("/_fic/o/t/img/shared.png")
    assert response.headers["Cache-Status"] == "fic; hit; detail=shared"
    assert response.body == png("shared.png")
    assert b.get("/_fic/o/t/img/shared.png").headers["Cache-Status"] == "fic; hit"  # now in L1
    assert origin.hits["/img/shared.png"] == 1


def test_hosts_stampede_makes_one_fetch(hosts: Any, origin: Origin) -> None:
    apps = [hosts("a"), hosts("b"), hosts("c")]

    def get(i: int) -> Any:
        return webtest.TestApp(apps[i % 3]).get("/_fic/o/t/slow/0.5/herd.png")

    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(get, range(12)))
    assert {r.body for r in responses} == {png("0.5/herd.png")}
    assert origin.hits["/slow/0.5/herd.png"] == 1


def test_corrupt_record_in_redis_is_not_served(hosts: Any, origin: Origin,
                                               redis_server: RedisServer) -> None:
    a = hosts("a")
    webtest.TestApp(a).get("/_fic/o/t/img/bad.png")
    client = redis.Redis.from_url(redis_server.url)
    (name,) = [n for n in client.keys("fic:*") if b"lock:" not in n]
    damaged = bytearray(client.get(name))
    damaged[-1] ^= 0xFF
    client.set(name, bytes(damaged))
    client.close()
    b = hosts("b")
    response = webtest.TestApp(b).get("/_fic/o/t/img/bad.png")
    assert response.body == png("bad.png")
    assert response.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert b.cache.stats.corrupt == 1
    assert origin.hits["/img/bad.png"] == 2


def test_requests_keep_succeeding_when_redis_dies(hosts: Any, origin: Origin,
                                                  redis_server: RedisServer) -> None:
    a = hosts("a")
    client = webtest.TestApp(a)
    client.get("/_fic/o/t/img/before.png")
    redis_server.stop()
    assert client.get("/_fic/o/t/img/before.png").headers["Cache-Status"] == "fic; hit"
    for name in ("after1", "after2", "after3"):
        assert client.get(f"/_fic/o/t/img/{name}.png").body == png(f"{name}.png")
    assert a.cache.stats.redis_failures >= 1
    redis_server.start()


def test_redis_down_from_the_start(make_mw: Any, tmp_path: Path) -> None:
    from .servers import free_port
    mw = make_mw(redis_url=f"redis://127.0.0.1:{free_port()}/0", redis_key=REDIS_KEY)
    assert webtest.TestApp(mw).get("/_fic/o/t/img/nored.png").body == png("nored.png")


def test_purge_reaches_the_shared_tier(hosts: Any, origin: Origin) -> None:
    a, b = hosts("a"), hosts("b")
    webtest.TestApp(a).get("/_fic/o/t/img/gone.png")
    assert a.purge_url(f"{origin.base}/img/gone.png") == 1
    response = webtest.TestApp(b).get("/_fic/o/t/img/gone.png")
    assert response.headers["Cache-Status"] == "fic; fwd=miss; stored"


def test_bad_redis_url_names_the_option(make_mw: Any) -> None:
    with pytest.raises(ConfigError, match="^redis_url:"):
        make_mw(redis_url="http://127.0.0.1:6379", redis_key=REDIS_KEY)


def test_redis_url_is_masked(make_mw: Any, redis_server: RedisServer) -> None:
    mw = make_mw(redis_url=redis_server.url.replace("redis://", "redis://:hunter2@"),
                 redis_key=REDIS_KEY)
    assert "hunter2" not in repr(mw.config)


# --- records from Redis are not trusted (issue 11, item 9) -----------------------------------

def _stored_name(redis_server: RedisServer) -> tuple[redis.Redis, bytes]:
    client = redis.Redis.from_url(redis_server.url)
    (name,) = [n for n in client.keys("fic:*") if b"lock:" not in n]
    return client, name


HTML = b"<html><script>alert(document.cookie)</script></html>"


def test_a_forged_record_in_redis_is_not_served(hosts: Any, origin: Origin,
                                                redis_server: RedisServer) -> None:
    """A well-formed record (crc32 and xxh3 recomputed) written by anyone with Redis access."""
    webtest.TestApp(hosts("a")).get("/_fic/o/t/img/forged.png")
    client, name = _stored_name(redis_server)
    key = name[len(b"fic:"):]
    forged = encode(Entry(HTML, "text/html", strong_etag(HTML), None, None, 0.0, 4e9), key)
    client.set(name, forged)
    client.close()
    b = hosts("b")
    response = webtest.TestApp(b).get("/_fic/o/t/img/forged.png")
    assert (response.content_type, response.body) == ("image/png", png("forged.png"))
    assert b.cache.stats.corrupt == 1


def test_an_authentic_record_that_is_not_an_image_is_not_served(hosts: Any, origin: Origin,
                                                                redis_server: RedisServer) -> None:
    """Second line of defence: type and magic bytes are checked again on the way in."""
    a = hosts("a")
    webtest.TestApp(a).get("/_fic/o/t/img/typed.png")
    client, name = _stored_name(redis_server)
    key = name[len(b"fic:"):]
    assert a.cache.tiers.shared is not None
    for content_type, body in (("text/html", HTML), ("image/png", HTML)):
        a.cache.tiers.shared.put(key, encode(Entry(body, content_type, strong_etag(body), None, None,
                                             0.0, 4e9), key), 60)
        b = hosts(f"b-{content_type.replace('/', '-')}")
        response = webtest.TestApp(b).get("/_fic/o/t/img/typed.png")
        assert (response.content_type, response.body) == ("image/png", png("typed.png"))
        assert b.cache.stats.corrupt == 1
    client.close()


def test_redis_url_requires_a_record_key(make_mw: Any, redis_server: RedisServer) -> None:
    with pytest.raises(ConfigError, match="^redis_key:"):
        make_mw(redis_url=redis_server.url)


def test_the_encryption_key_can_authenticate_redis_records(make_mw: Any, tmp_path: Path, origin: Origin,
                                                           redis_server: RedisServer) -> None:
    a = make_mw(cache_dir=str(tmp_path / "a"), redis_url=redis_server.url, encryption_key="k1")
    b = make_mw(cache_dir=str(tmp_path / "b"), redis_url=redis_server.url, encryption_key="k1")
    webtest.TestApp(a).get("/_fic/o/t/img/enc.png")
    assert webtest.TestApp(b).get("/_fic/o/t/img/enc.png").headers["Cache-Status"] == \
        "fic; hit; detail=shared"


def test_the_redis_key_is_masked(make_mw: Any, redis_server: RedisServer) -> None:
    mw = make_mw(redis_url=redis_server.url, redis_key="hunter2")
    assert "hunter2" not in repr(mw.config)
