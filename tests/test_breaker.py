"""The circuit breaker per origin host (issue 13, part 3): its states, shared by processes
through the cache directory, in the middleware, and under gunicorn against dead origins."""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import webtest
from werkzeug.serving import make_server

from fic_middleware import FastImageCache
from fic_middleware.breaker import Breaker, origin_of
from fic_middleware.errors import (
    BadRequest, NotFound, OriginDown, OriginError, OriginRefused, OriginTimeout,
    OriginUnavailable, Overloaded, RequestError,
)

from .conftest import Clock, Origin
from .servers import BlackHole, Unaccepting, get, gunicorn

URL = "http://127.0.0.1:8000/img/a.png"
T0 = 1_000_000.0


@pytest.fixture
def clock() -> Clock:
    return Clock(T0)


@pytest.fixture
def make_breaker(tmp_path: Path, clock: Clock) -> Iterator[Callable[..., Breaker]]:
    made: list[Breaker] = []

    def make(failures: int = 3, cooldown: float = 30.0, shared: bool = True) -> Breaker:
        breaker = Breaker(str(tmp_path / "breaker") if shared else None, failures, cooldown,
                          probe_lease=10.0, clock=clock)
        made.append(breaker)
        return breaker

    yield make
    for breaker in made:
        breaker.close()


def fetch(breaker: Breaker, outcome: RequestError | None = None, url: str = URL) -> None:
    """One guarded fetch that ends with ``outcome`` (None: the origin sent the image)."""
    with breaker.guard(url):
        if outcome is not None:
            raise outcome


def fail(breaker: Breaker, times: int, url: str = URL) -> None:
    for _ in range(times):
        with pytest.raises(OriginUnavailable):
            fetch(breaker, OriginUnavailable("origin could not be reached"), url)


def state(breaker: Breaker, url: str = URL) -> str:
    for circuit in breaker.states():
        if circuit["origin"] == origin_of(url):
            return str(circuit["state"])
    return "closed"


# --- the state machine, in one process ---

@pytest.mark.parametrize("shared", [pytest.param(True, id="file"), pytest.param(False, id="process")])
def test_circuit_opens_after_consecutive_failures(make_breaker: Callable[..., Breaker],
                                                  shared: bool) -> None:
    breaker = make_breaker(failures=3, cooldown=30, shared=shared)
    fail(breaker, 2)
    fetch(breaker)  # two failures: still asked... and it answered, so the count restarts
    fail(breaker, 3)
    with pytest.raises(OriginDown) as down:
        fetch(breaker)
    assert (down.value.status, down.value.retry_after) == (503, 30)


@pytest.mark.parametrize("failure", [
    pytest.param(OriginUnavailable("origin could not be reached"), id="connect failure or 5xx"),
    pytest.param(OriginTimeout("origin timed out"), id="timeout"),
])
def test_failures_that_count(make_breaker: Callable[..., Breaker], failure: RequestError) -> None:
    breaker = make_breaker(failures=2)
    for _ in range(2):
        with pytest.raises(type(failure)):
            fetch(breaker, failure)
    assert state(breaker) == "open"


@pytest.mark.parametrize("answer", [
    pytest.param(None, id="image"),
    pytest.param(NotFound("image not found at origin"), id="404"),
    pytest.param(OriginRefused("origin answered 403"), id="4xx"),
    pytest.param(OriginError("origin response is not an allowed image type"), id="not an image"),
])
def test_an_answer_resets_the_count(make_breaker: Callable[..., Breaker],
                                    answer: RequestError | None) -> None:
    breaker = make_breaker(failures=3)
    fail(breaker, 2)
    with pytest.raises(RequestError) if answer is not None else contextlib.nullcontext():
        fetch(breaker, answer)
    fail(breaker, 2)
    assert state(breaker) == "closed"


def test_circuits_are_per_scheme_host_and_port(make_breaker: Callable[..., Breaker]) -> None:
    breaker = make_breaker(failures=1)
    fail(breaker, 1, "http://127.0.0.1:8000/a.png")
    fetch(breaker, url="http://127.0.0.1:8001/a.png")
    fetch(breaker, url="https://127.0.0.1:8000/a.png")
    with pytest.raises(OriginDown):
        fetch(breaker, url="http://127.0.0.1:8000/another.png")


@pytest.mark.parametrize("url, origin", [
    pytest.param("http://example.com/a.png", "http://example.com:80", id="http default port"),
    pytest.param("https://example.com/a.png", "https://example.com:443", id="https default port"),
    pytest.param("http://example.com:8080/a?b", "http://example.com:8080", id="explicit port"),
    pytest.param("http://[::1]:8080/a.png", "http://[::1]:8080", id="ipv6"),
])
def test_origin_of(url: str, origin: str) -> None:
    assert origin_of(url) == origin


def test_after_the_cooldown_one_request_probes(make_breaker: Callable[..., Breaker],
                                               clock: Clock) -> None:
    breaker = make_breaker(failures=1, cooldown=30)
    fail(breaker, 1)
    clock.now += 30
    with breaker.guard(URL):  # the probe, still out...
        assert state(breaker) == "half-open"
        with pytest.raises(OriginDown):  # ...so the others still fail fast
            fetch(breaker)
    assert state(breaker) == "closed"
    fetch(breaker)


def test_a_failed_probe_reopens_the_circuit(make_breaker: Callable[..., Breaker],
                                            clock: Clock) -> None:
    breaker = make_breaker(failures=1, cooldown=30)
    fail(breaker, 1)
    clock.now += 30
    fail(breaker, 1)
    with pytest.raises(OriginDown) as down:
        fetch(breaker)
    assert down.value.retry_after == 30
    assert breaker.states()[0]["trips"] == 1  # a reopening is not another trip


def test_a_probe_that_never_reports_is_replaced_after_its_lease(
        make_breaker: Callable[..., Breaker], clock: Clock) -> None:
    breaker = make_breaker(failures=1, cooldown=30)
    fail(breaker, 1)
    clock.now += 30
    probe = breaker.guard(URL)
    probe.__enter__()  # taken by a worker that dies: it never reports
    with pytest.raises(OriginDown):
        fetch(breaker)
    clock.now += 10  # probe_lease
    fetch(breaker)
    assert state(breaker) == "closed"


@pytest.mark.parametrize("outcome", [
    pytest.param(Overloaded("too many images are being fetched", retry_after=1), id="overloaded"),
    pytest.param(BadRequest("bad URL"), id="bad request"),
])
def test_a_probe_without_verdict_hands_over_at_once(make_breaker: Callable[..., Breaker],
                                                    clock: Clock, outcome: RequestError) -> None:
    breaker = make_breaker(failures=1, cooldown=30)
    fail(breaker, 1)
    clock.now += 30
    with pytest.raises(type(outcome)):
        fetch(breaker, outcome)
    fetch(breaker)  # the next request is the probe, not a fast failure
    assert state(breaker) == "closed"


def test_zero_failures_turns_the_breaker_off(make_breaker: Callable[..., Breaker]) -> None:
    breaker = make_breaker(failures=0)
    fail(breaker, 20)
    fetch(breaker)
    assert breaker.states() == []


def test_a_full_table_reuses_the_oldest_closed_slot(make_breaker: Callable[..., Breaker],
                                                    clock: Clock) -> None:
    breaker = make_breaker(failures=2)
    for port in range(1, 257):
        clock.now += 1
        fail(breaker, 1, f"http://127.0.0.1:{port}/a.png")
    fail(breaker, 2, "http://127.0.0.1:9999/a.png")
    origins = {c["origin"] for c in breaker.states()}
    assert "http://127.0.0.1:9999" in origins and "http://127.0.0.1:1" not in origins
    assert state(breaker, "http://127.0.0.1:9999/a.png") == "open"


# --- shared by the processes of a host ---

def _in_child(path: str, now: float, action: str, queue: multiprocessing.Queue[str]) -> None:
    breaker = Breaker(path, 2, 30.0, probe_lease=10.0, clock=lambda: now)
    try:
        if action == "fail":
            fail(breaker, 2)
            queue.put("failed")
        elif action == "probe":
            probe = breaker.guard(URL)
            probe.__enter__()
            queue.put("probe")
            # A worker that dies while probing: no verdict, the probe stays out.
            queue.close()
            queue.join_thread()
            os._exit(0)
        else:
            fetch(breaker)
            queue.put("fetched")
    except OriginDown:
        queue.put("down")
    finally:
        breaker.close()


def run_children(path: Path, now: float, action: str, count: int = 1) -> list[str]:
    context = multiprocessing.get_context("spawn")
    queue: multiprocessing.Queue[str] = context.Queue()
    children = [context.Process(target=_in_child, args=(str(path), now, action, queue))
                for _ in range(count)]
    for child in children:
        child.start()
    for child in children:
        child.join(30)
    return sorted(queue.get(timeout=5) for _ in children)


def test_a_circuit_opened_by_one_process_fails_fast_in_another(
        make_breaker: Callable[..., Breaker], tmp_path: Path) -> None:
    assert run_children(tmp_path / "breaker", T0, "fail") == ["failed"]
    assert run_children(tmp_path / "breaker", T0 + 1, "fetch") == ["down"]
    with pytest.raises(OriginDown):
        fetch(make_breaker(failures=2))


def test_exactly_one_process_probes(tmp_path: Path) -> None:
    run_children(tmp_path / "breaker", T0, "fail")
    answers = run_children(tmp_path / "breaker", T0 + 30, "probe", count=4)
    assert answers == ["down"] * 3 + ["probe"]


def test_a_probe_in_one_process_closes_the_circuit_for_all(
        make_breaker: Callable[..., Breaker], tmp_path: Path, clock: Clock) -> None:
    run_children(tmp_path / "breaker", T0, "fail")
    clock.now = T0 + 30
    fetch(make_breaker(failures=2))
    assert run_children(tmp_path / "breaker", T0 + 31, "fetch") == ["fetched"]


# --- in the middleware ---

AUTH = {"Authorization": "Bearer t0ken"}


def trip(app: webtest.TestApp, failures: int) -> None:
    for _ in range(failures):
        app.get("/_fic/o/t/status/503", status=502)


def test_an_open_circuit_answers_misses_503_without_asking_the_origin(
        make_mw: Callable[..., FastImageCache], origin: Origin) -> None:
    app = webtest.TestApp(make_mw(breaker_failures=2, breaker_cooldown="30s"))
    trip(app, 2)
    response = app.get("/_fic/o/t/img/a.png", status=503)
    assert response.headers["Retry-After"] == "30"
    assert response.text == "the origin is failing; try again later\n"
    assert origin.hits["/img/a.png"] == 0


def test_an_open_circuit_serves_a_stale_copy(make_mw: Callable[..., FastImageCache],
                                             origin: Origin) -> None:
    app = webtest.TestApp(make_mw(breaker_failures=2, forward_query=True, min_ttl=0,
                                  stale_while_revalidate=0))
    app.get("/_fic/o/t/img/s.png?cc=max-age=0", status=200)  # stored, already stale
    trip(app, 2)
    response = app.get("/_fic/o/t/img/s.png?cc=max-age=0", status=200)
    assert response.headers["Cache-Status"] == "fic; hit; detail=origin-down"
    assert origin.hits["/img/s.png"] == 1


def test_the_first_answer_after_the_cooldown_closes_the_circuit(
        make_mw: Callable[..., FastImageCache], origin: Origin) -> None:
    mw = make_mw(breaker_failures=1, breaker_cooldown="200ms")
    app = webtest.TestApp(mw)
    trip(app, 1)
    app.get("/_fic/o/t/img/a.png", status=503)
    time.sleep(0.3)  # past the cool-down
    response = app.get("/_fic/o/t/img/a.png", status=200)
    assert response.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert [c["state"] for c in mw.cache.breaker.states()] == ["closed"]
    app.get("/_fic/o/t/img/b.png", status=200)


def test_admin_stats_and_metrics_show_the_circuit(make_mw: Callable[..., FastImageCache],
                                                  origin: Origin) -> None:
    app = webtest.TestApp(make_mw(breaker_failures=1, breaker_cooldown="1h", admin_token="t0ken"))
    trip(app, 1)
    circuits = app.get("/_fic/_admin/stats", headers=AUTH).json["circuits"]
    assert circuits == [{"origin": origin_of(origin.base), "state": "open", "failures": 1,
                         "trips": 1, "retry_after": 3600}]
    metrics = app.get("/_fic/_admin/metrics", headers=AUTH).text
    label = f'{{origin="{origin_of(origin.base)}"}}'
    assert f"fic_origin_circuit_open{label} 1.0" in metrics
    assert f"fic_origin_circuit_trips_total{label} 1.0" in metrics


def test_a_hit_does_not_touch_the_breaker_table(make_mw: Callable[..., FastImageCache],
                                                tmp_path: Path) -> None:
    webtest.TestApp(make_mw()).get("/_fic/o/t/img/h.png", status=200)
    table = tmp_path / "cache" / "breaker"
    table.unlink()
    response = webtest.TestApp(make_mw()).get("/_fic/o/t/img/h.png", status=200)  # another worker
    assert response.headers["Cache-Status"] == "fic; hit"
    assert not table.exists()


# --- under gunicorn, against dead origins ---

@pytest.mark.slow
@pytest.mark.parametrize("dead_origin", [
    pytest.param(BlackHole, id="accepts and never answers"),
    pytest.param(Unaccepting, id="never accepts"),
])
def test_a_dead_origin_fails_fast_while_the_app_keeps_answering(
        origin: Origin, tmp_path: Path, dead_origin: type[BlackHole | Unaccepting]) -> None:
    dead = dead_origin()
    failures = 3
    env = {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"t=http://127.0.0.1:{dead.port}",
           "FIC_ALLOWED_NETWORKS": "127.0.0.1/32", "FIC_CONNECT_TIMEOUT": "1s",
           "FIC_READ_TIMEOUT": "1s", "FIC_RETRIES": "0", "FIC_BREAKER_FAILURES": str(failures),
           "FIC_BREAKER_COOLDOWN": "5s", "FIC_ADMIN_TOKEN": "t0ken"}
    recovered = None
    try:
        with gunicorn("tests.apps.gunicorn_app:app", env, ["--workers", "4"]) as base:
            with ThreadPoolExecutor(8) as pool:
                misses = [pool.submit(get, f"{base}/_fic/o/t/img/{i}.png", timeout=30)
                          for i in range(40)]
                pages = [pool.submit(get, f"{base}/page", timeout=30) for _ in range(40)]
                answers = [m.result() for m in misses]
                assert all(p.result()[0] == 200 for p in pages), "pass-through must keep working"
            statuses = Counter(status for status, _, _ in answers)
            # Timeouts until the circuit opened (and those already in flight on the other three
            # workers, and a probe should the run outlast the cool-down); after it, 503 at once.
            assert set(statuses) == {503, 504}
            assert failures <= statuses[504] <= failures + 3 + 2
            fast = [headers for status, headers, body in answers if status == 503]
            assert all(h["Retry-After"].isdigit() for h in fast)
            if isinstance(dead, BlackHole):  # fast failures never reached it
                assert len(dead.accepted) == statuses[504]

            # The origin comes back on the same port: the first request after the cool-down
            # probes it, and its answer closes the circuit for every worker.
            dead.close()
            recovered = make_server("127.0.0.1", dead.port, origin.app, threaded=True)
            threading.Thread(target=recovered.serve_forever, daemon=True).start()
            deadline = time.monotonic() + 30
            status, headers, _ = get(f"{base}/_fic/o/t/img/back.png")
            while status == 503 and time.monotonic() < deadline:
                time.sleep(0.2)
                status, headers, _ = get(f"{base}/_fic/o/t/img/back.png")
            assert (status, headers["Cache-Status"]) == (200, "fic; fwd=miss; stored")
            status, _, body = get(f"{base}/_fic/_admin/stats", headers=AUTH)
            circuits = json.loads(body)["circuits"]
            assert [(c["state"], c["trips"]) for c in circuits] == [("closed", 1)]
            with ThreadPoolExecutor(8) as pool:
                after = list(pool.map(lambda i: get(f"{base}/_fic/o/t/img/after{i}.png")[0],
                                      range(16)))
            assert after == [200] * 16
    finally:
        dead.close()
        if recovered is not None:
            recovered.shutdown()
            recovered.server_close()

