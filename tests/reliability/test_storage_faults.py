"""The LMDB files under stress: a budget churned many times over, damaged records, a full
map, readers and writers of killed processes. Requests keep succeeding with the origin's
exact bytes; what is stored stays within the map and checks out."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self

import lmdb
import pytest

from fic_middleware.record import _HEADER, Entry, encode
from fic_middleware.storage.lmdb_store import LMDBStore

from ..servers import ROOT
from .conftest import (
    FaultOrigin,
    assert_sane,
    call,
    run_verify,
    sized_png,
    stored_bodies,
    whole,
)

pytestmark = pytest.mark.slow  # the reliability suite: scripts/test --fast skips it

KIB = 1024


def sizes(i: int) -> int:
    """2 KiB to 46 KiB: below and above LMDB's page size, so pages fragment."""
    return (2 + (i * 7919) % 45) * KIB


def churn_origin(fault_origin: FaultOrigin) -> Callable[[int], tuple[str, bytes]]:
    """``/c/{i}.png`` is a distinct image of ``sizes(i)`` bytes; returns (path, bytes)."""
    fault_origin.route("/c/", lambda rest: whole(sized_png(rest, sizes(int(rest[:-4])))))

    def image(i: int) -> tuple[str, bytes]:
        return f"/_fic/o/f/c/{i}.png", sized_png(f"{i}.png", sizes(i))
    return image


def data_file(mw: Any) -> int:
    return os.path.getsize(Path(mw.config.cache_dir) / "data.mdb")


# --- 7. the byte budget, churned many times over -----------------------------------------------

@pytest.mark.parametrize("policy", ["lru", "fifo", "ttl", "s3fifo"])
def test_churn_of_many_budgets_stays_within_the_map(make_mw: Any, fault_origin: FaultOrigin,
                                                    policy: str) -> None:
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="256KiB", max_image_bytes="64KiB",
                 eviction=policy)
    image = churn_origin(fault_origin)
    written = 0
    i = 0

    def fetch(i: int) -> int:
        path, body = image(i)
        answer = call(mw, path)
        assert_sane(answer, body)
        assert (answer.status, answer.headers["Cache-Status"]) == (200, "fic; fwd=miss; stored")
        return len(body)

    with ThreadPoolExecutor(4) as pool:  # four writers contend for LMDB's write lock
        while written < 16 * mw.config.max_bytes:
            written += sum(pool.map(fetch, range(i, i + 16)))
            i += 16
            assert mw.storage.stats()["bytes"] <= mw.config.max_bytes
            assert data_file(mw) <= mw.storage.map_size
    stats = mw.storage.stats()
    assert stats["evictions"] > 0 and stats["bytes"] <= mw.config.max_bytes
    # The most recent images are still there, and served from the cache.
    recent = range(i - 1, i - 4, -1) if policy != "s3fifo" else range(i - 1, i - 2, -1)
    for j in recent:
        path, body = image(j)
        answer = call(mw, path)
        assert_sane(answer, body)
        assert answer.headers["Cache-Status"] == "fic; hit", (j, i)
    # Whatever is stored decodes to one of the images sent; the counters match the records.
    bodies = stored_bodies(mw)
    sent = {image(j)[1] for j in range(i)}
    assert set(bodies.values()) <= sent
    assert len(bodies) == stats["entries"]


# --- 8. a record damaged behind the middleware's back ------------------------------------------

def _flip(offset: int) -> Callable[[bytes], bytes]:
    def damage(record: bytes) -> bytes:
        changed = bytearray(record)
        changed[offset] ^= 0x41
        return bytes(changed)
    return damage


DAMAGE: dict[str, Callable[[bytes], bytes]] = {
    "body byte": _flip(-1),
    "first body byte": lambda record: _flip(_HEADER.size + _HEADER.unpack_from(record)[-2])(record),
    "magic": _flip(0),
    "expiry in the header": _flip(16),
    "digest": _flip(24),
    "meta (content type)": _flip(_HEADER.size),
    "body length": _flip(32),
    "truncated": lambda record: record[:-100],
    "extended": lambda record: record + b"\0",
    "header only": lambda record: record[:_HEADER.size],
    "empty": lambda record: b"",
    "zeroed": lambda record: bytes(len(record)),
}


def _damage_records(cache_dir: str, how: Callable[[bytes, bytes], bytes]) -> int:
    """Rewrite every record as ``how(key, record)``, with LMDB itself (the middleware that
    used this directory must be closed: one env per file per process)."""
    env = lmdb.open(cache_dir, max_dbs=8, subdir=True, map_size=64 << 20)
    try:
        records = env.open_db(b"records")
        with env.begin(write=True, db=records) as txn:
            damaged = [(bytes(k), how(bytes(k), bytes(v))) for k, v in txn.cursor()]
            for key, value in damaged:
                txn.put(key, value)
    finally:
        env.close()
    return len(damaged)


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_record_is_refetched_never_served(make_mw: Any, fault_origin: FaultOrigin,
                                                  tmp_path: Path, damage: Callable[..., bytes]) -> None:
    body = sized_png("rec", 20 * KIB)
    fault_origin.behave("/rec.png", *whole(body))
    first = make_mw(origins={"f": fault_origin.base})
    assert call(first, "/_fic/o/f/rec.png").headers["Cache-Status"] == "fic; fwd=miss; stored"
    first.close()  # py-lmdb opens an environment once per process: let go of it first
    assert _damage_records(str(tmp_path / "cache"), lambda key, record: damage(record)) == 1
    mw = make_mw(origins={"f": fault_origin.base})
    answer = call(mw, "/_fic/o/f/rec.png")
    assert_sane(answer, body)
    assert (answer.status, answer.headers["Cache-Status"]) == (200, "fic; fwd=miss; stored")
    assert mw.cache.stats.corrupt == 1
    assert fault_origin.hits["/rec.png"] == 2
    hit = call(mw, "/_fic/o/f/rec.png")
    assert_sane(hit, body)
    assert hit.headers["Cache-Status"] == "fic; hit"
    assert stored_bodies(mw) == {mw.router.route("/o/f/rec.png", "").key: body}


def test_verify_finds_every_kind_of_damage(make_mw: Any, fault_origin: FaultOrigin,
                                           tmp_path: Path) -> None:
    """``fic verify`` (its own process) counts each damaged record and exits 1; ``--fix``
    deletes them; the cache then refetches every image, byte-exact, and verify passes."""
    image = churn_origin(fault_origin)
    mw = make_mw(origins={"f": fault_origin.base})
    paths = {name: image(i) for i, name in enumerate(DAMAGE)}
    for path, _ in paths.values():
        call(mw, path)
    keys = {mw.router.route(path[len("/_fic"):], "").key: name for name, (path, _) in paths.items()}
    mw.close()
    cache_dir = str(tmp_path / "cache")
    assert _damage_records(cache_dir, lambda key, record: DAMAGE[keys[key]](record)) == len(DAMAGE)
    verify = run_verify(cache_dir)
    assert verify.returncode == 1, verify
    assert json.loads(verify.stdout)["corrupt"] == len(DAMAGE)

    mw = make_mw(origins={"f": fault_origin.base})
    for path, body in paths.values():
        answer = call(mw, path)
        assert_sane(answer, body)
        assert answer.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert mw.cache.stats.corrupt == len(DAMAGE)
    mw.close()
    verify = run_verify(cache_dir)
    assert verify.returncode == 0, verify
    assert json.loads(verify.stdout) == {"ok": len(DAMAGE), "corrupt": 0, "other_version": 0,
                                         "deleted": 0}


def test_record_of_another_version_is_a_miss(make_mw: Any, fault_origin: FaultOrigin,
                                             tmp_path: Path) -> None:
    body = sized_png("ver", 4 * KIB)
    fault_origin.behave("/ver.png", *whole(body))
    first = make_mw(origins={"f": fault_origin.base})
    call(first, "/_fic/o/f/ver.png")
    first.close()
    _damage_records(str(tmp_path / "cache"), lambda key, r: r[:3] + b"\x63" + r[4:])
    mw = make_mw(origins={"f": fault_origin.base})
    answer = call(mw, "/_fic/o/f/ver.png")
    assert_sane(answer, body)
    assert answer.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert mw.cache.stats.corrupt == 0  # not damage: another release's format, replaced
    assert call(mw, "/_fic/o/f/ver.png").headers["Cache-Status"] == "fic; hit"


class WallClock:
    """The wall clock, ``ahead`` seconds ahead: a worker's memo hits re-read and hash their
    record once a second (docs/PERFORMANCE.md, "The memo hit's guarantees"), so damage made
    behind LMDB's back is seen within a second; a test moves the clock past it."""

    def __init__(self) -> None:
        self.ahead = 0.0

    def __call__(self) -> float:
        return time.time() + self.ahead


DAMAGE_LIVE = textwrap.dedent("""
    import lmdb, sys
    env = lmdb.open(sys.argv[1], max_dbs=8, subdir=True, map_size=int(sys.argv[2]))
    records = env.open_db(b"records")
    with env.begin(write=True, db=records) as txn:
        for key, value in list(txn.cursor()):
            value = bytearray(value)
            value[-1] ^= 0x41
            txn.put(key, bytes(value))
    env.close()
""")


def test_damage_by_another_process_while_the_cache_runs(make_mw: Any, fault_origin: FaultOrigin,
                                                         tmp_path: Path) -> None:
    """The middleware stays open and has the entry decoded in memory (its hit memo): a
    record changed underneath is noticed within a second, then never served."""
    body = sized_png("live", 20 * KIB)
    fault_origin.behave("/live.png", *whole(body))
    clock = WallClock()
    mw = make_mw(origins={"f": fault_origin.base}, clock=clock)
    for status in ("fic; fwd=miss; stored", "fic; hit", "fic; hit"):
        assert call(mw, "/_fic/o/f/live.png").headers["Cache-Status"] == status
    subprocess.run([sys.executable, "-c", DAMAGE_LIVE, str(tmp_path / "cache"),
                    str(mw.storage.map_size)], check=True, timeout=30)
    clock.ahead += 1
    answer = call(mw, "/_fic/o/f/live.png")
    assert_sane(answer, body)
    assert answer.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert mw.cache.stats.corrupt == 1
    assert call(mw, "/_fic/o/f/live.png").headers["Cache-Status"] == "fic; hit"


def test_bit_rot_in_data_mdb_while_the_cache_runs(make_mw: Any, fault_origin: FaultOrigin,
                                                  tmp_path: Path) -> None:
    """A byte of the body flipped in data.mdb itself (not through LMDB), under a running
    middleware whose mapped pages and hit memo both held the good record."""
    body = sized_png("rot", 24 * KIB)
    fault_origin.behave("/rot.png", *whole(body))
    clock = WallClock()
    mw = make_mw(origins={"f": fault_origin.base}, clock=clock)
    for status in ("fic; fwd=miss; stored", "fic; hit"):
        assert call(mw, "/_fic/o/f/rot.png").headers["Cache-Status"] == status
    data_mdb = tmp_path / "cache" / "data.mdb"
    needle = body[len(body) // 2:len(body) // 2 + 64]
    at = data_mdb.read_bytes().find(needle)
    assert at > 0
    with open(data_mdb, "r+b") as fh:
        fh.seek(at + 10)
        byte = fh.read(1)
        fh.seek(at + 10)
        fh.write(bytes((byte[0] ^ 0x10,)))
    clock.ahead += 1
    answer = call(mw, "/_fic/o/f/rot.png")
    assert_sane(answer, body)
    assert answer.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert mw.cache.stats.corrupt == 1
    assert call(mw, "/_fic/o/f/rot.png").headers["Cache-Status"] == "fic; hit"
    mw.close()
    assert run_verify(tmp_path / "cache").returncode == 0


# --- 9. a full LMDB map ------------------------------------------------------------------------

class _FullTxn:
    """A write transaction whose puts into ``records`` raise MapFullError while the budget
    of failures lasts (lmdb's Transaction is a C type: it is wrapped, not patched)."""

    def __init__(self, txn: Any, env: _FullEnv) -> None:
        self._txn, self._env = txn, env

    def __enter__(self) -> Self:
        self._txn.__enter__()
        return self

    def __exit__(self, *exc: object) -> Any:
        return self._txn.__exit__(*exc)

    def put(self, key: bytes, value: bytes, **kw: Any) -> Any:
        if kw.get("db") is self._env.records and self._env.failures > 0:
            self._env.failures -= 1
            raise lmdb.MapFullError("mdb_put: MDB_MAP_FULL (simulated)")
        return self._txn.put(key, value, **kw)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._txn, name)


class _FullEnv:
    def __init__(self, env: Any, records: Any, failures: int) -> None:
        self._env, self.records, self.failures = env, records, failures

    def begin(self, **kw: Any) -> Any:
        txn = self._env.begin(**kw)
        return _FullTxn(txn, self) if kw.get("write") else txn

    def __getattr__(self, name: str) -> Any:
        return getattr(self._env, name)


@pytest.mark.parametrize(("failures", "stored"), [(1, True), (2, True), (1000, False)])
def test_map_full_on_store_never_reaches_the_client(make_mw: Any, fault_origin: FaultOrigin,
                                                   failures: int, stored: bool) -> None:
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="256KiB", max_image_bytes="64KiB")
    image = churn_origin(fault_origin)
    for i in range(8):  # something to evict
        assert call(mw, image(i)[0]).status == 200
    handle = mw.storage._open()
    handle.env = _FullEnv(handle.env, handle.records, failures)
    path, body = image(100)
    answer = call(mw, path)
    assert_sane(answer, body)
    assert answer.status == 200
    assert answer.headers["Cache-Status"] == ("fic; fwd=miss; stored" if stored else "fic; fwd=miss")
    handle.env = handle.env._env
    answer = call(mw, path)
    assert_sane(answer, body)
    assert answer.headers["Cache-Status"] == ("fic; hit" if stored else "fic; fwd=miss; stored")
    assert call(mw, path).headers["Cache-Status"] == "fic; hit"


def test_real_map_full_while_a_reader_pins_pages(make_mw: Any, fault_origin: FaultOrigin) -> None:
    """A long read transaction (alive, in this process) keeps LMDB from reusing freed pages:
    churn fills the whole map for real. Every request is still a 200 with the exact bytes;
    once the reader ends, storing resumes."""
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="256KiB", max_image_bytes="64KiB")
    image = churn_origin(fault_origin)
    assert call(mw, image(0)[0]).status == 200
    reader = mw.storage._open().env.begin()
    try:
        statuses = set()
        written = i = 0
        while written < 2 * mw.storage.map_size:
            i += 1
            path, body = image(i)
            answer = call(mw, path)
            assert_sane(answer, body)
            assert answer.status == 200
            statuses.add(answer.headers["Cache-Status"])
            written += len(body)
            assert data_file(mw) <= mw.storage.map_size
    finally:
        reader.abort()
    assert "fic; fwd=miss" in statuses, "the map never filled: the test proves nothing"
    path, body = image(i + 1)
    answer = call(mw, path)
    assert_sane(answer, body)
    assert answer.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert call(mw, path).headers["Cache-Status"] == "fic; hit"
    assert mw.storage.stats()["bytes"] <= mw.config.max_bytes


FILE_SIZE_LIMIT = textwrap.dedent("""
    import json, resource, signal, sys
    from tests.reliability.conftest import call, sized_png
    from fic_middleware import FastImageCache

    cache_dir, base = sys.argv[1], sys.argv[2]
    mw = FastImageCache(lambda environ, start_response: [], cache_dir=cache_dir,
                        origins={"f": base}, allowed_networks=["127.0.0.1/32"], retries=0,
                        max_bytes="4MiB", max_image_bytes="64KiB")
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails (EFBIG)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    answers = []

    def churn(start, stop):
        for i in range(start, stop):
            answer = call(mw, f"/_fic/o/f/c/{i}.png")
            answers.append([i, answer.status, answer.headers.get("Cache-Status"),
                            answer.body == sized_png(f"{i}.png", 40 * 1024)])

    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # the disk is full at 1 MiB
    churn(0, 40)
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))  # space again
    churn(40, 50)
    churn(0, 3)
    mw.close()
    print(json.dumps(answers))
""")


def test_filesystem_full_never_fails_a_request(fault_origin: FaultOrigin, tmp_path: Path) -> None:
    """The file system refuses to grow data.mdb (RLIMIT_FSIZE, in a process of its own):
    commits fail, every request is still the image; with space again, storing resumes."""
    fault_origin.route("/c/", lambda rest: whole(sized_png(rest, 40 * KIB)))
    done = subprocess.run([sys.executable, "-c", FILE_SIZE_LIMIT, str(tmp_path / "cache"),
                           fault_origin.base], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           check=False)
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    assert all(status == 200 and same for _, status, _, same in answers)
    full = [cache_status for i, _, cache_status, _ in answers[:40]]
    assert "fic; fwd=miss" in full, "the limit was never reached: the test proves nothing"
    assert [cache_status for _, _, cache_status, _ in answers[40:50]] == ["fic; fwd=miss; stored"] * 10
    assert [cache_status for _, _, cache_status, _ in answers[50:]] == ["fic; hit"] * 3
    assert run_verify(tmp_path / "cache").returncode == 0


def _fill_by_page_overhead(store: LMDBStore, puts: int) -> int:
    """Distinct valid 12,289-byte records (four 4 KiB pages each on disk: 1.33x, more than
    the map's 25% slack), ``puts`` of them: far more than the byte budget, so eviction must
    run. Returns how many were refused (it stops after 21)."""
    refused = 0
    now = time.time()
    overhead = len(encode(Entry(b"", "image/png", '"e"', None, None, now, now)))
    for i in range(puts):
        body = b"\x89PNG\r\n\x1a\n" + os.urandom(12_289 - overhead - 8)
        key = i.to_bytes(16, "big")
        record = encode(Entry(body, "image/png", '"e"', None, None, now, now + 3600), key)
        if not store.put(key, record):
            refused += 1
            if refused > 20:
                break
    return refused


def test_records_over_a_page_keep_being_stored(tmp_path: Path) -> None:
    store = LMDBStore(str(tmp_path), max_bytes=32 << 20)
    try:
        assert _fill_by_page_overhead(store, 4000) == 0
        assert store.stats()["bytes"] <= store.max_bytes
    finally:
        store.close()


def test_records_over_a_page_full_map_still_answers(make_mw: Any, fault_origin: FaultOrigin,
                                                    tmp_path: Path) -> None:
    """Churn of records larger than a page costs clients nothing: every answer is 200 with
    the right bytes (the first image may have been evicted by then), verify is clean."""
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="32MiB", max_image_bytes="64KiB")
    image = churn_origin(fault_origin)
    path, body = image(1)
    assert call(mw, path).headers["Cache-Status"] == "fic; fwd=miss; stored"
    _fill_by_page_overhead(mw.storage, 4000)
    for i in range(2, 6):
        new_path, new_body = image(i)
        answer = call(mw, new_path)
        assert_sane(answer, new_body)
        assert answer.status == 200
    answer = call(mw, path)
    assert_sane(answer, body)
    assert answer.status == 200
    mw.close()
    assert run_verify(tmp_path / "cache").returncode == 0


def test_purge_all_empties_a_full_map(tmp_path: Path) -> None:
    """A map filled for real (records written behind the budget's back) still empties."""
    store = LMDBStore(str(tmp_path), max_bytes=1 << 20)
    try:
        assert store.put(b"first-key-012345", b"stored")
        h = store._handle
        assert h is not None
        with pytest.raises(lmdb.MapFullError):
            for i in range(10_000):
                with h.env.begin(write=True, db=h.records) as txn:
                    txn.put(i.to_bytes(16, "big"), os.urandom(16_000))
        assert store.clear() > 0
        assert store.put(b"k" * 16, b"fits again")
        assert store.get(b"k" * 16, lambda key, value: bytes(value)) == b"fits again"
    finally:
        store.close()


# --- 10. readers and writers of killed processes -----------------------------------------------

HOLD = textwrap.dedent("""
    import lmdb, sys, time
    env = lmdb.open(sys.argv[1], max_dbs=8, subdir=True, map_size=int(sys.argv[2]))
    if sys.argv[3] == "write":
        txn = env.begin(write=True, db=env.open_db(b"records"))
        txn.put(b"w" * 16, b"never committed" * 50_000)
    else:
        txn = env.begin()
        txn.get(b"anything")
    print("ready", flush=True)
    time.sleep(120)
""")


def _killed_holder(cache_dir: str, map_size: int, kind: str) -> None:
    """A process that holds a read (or an uncommitted write) transaction, killed with -9."""
    child = subprocess.Popen([sys.executable, "-c", HOLD, cache_dir, str(map_size), kind],
                             stdout=subprocess.PIPE)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == b"ready"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        assert child.stdout is not None
        child.stdout.close()


def _churn_past_the_map(mw: Any, image: Callable[[int], tuple[str, bytes]], start: int) -> list[str]:
    """Distinct misses worth more than the whole map; their Cache-Status values."""
    statuses = []
    written, i = 0, start
    while written < mw.storage.map_size + (1 << 20):
        path, body = image(i)
        answer = call(mw, path)
        assert_sane(answer, body)
        assert answer.status == 200
        statuses.append(answer.headers["Cache-Status"])
        written += len(body)
        i += 1
    assert data_file(mw) <= mw.storage.map_size
    return statuses


def test_reader_killed_before_the_cache_opens(make_mw: Any, fault_origin: FaultOrigin,
                                              tmp_path: Path) -> None:
    """reader_check at open frees the dead reader's slot: nothing stays pinned."""
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="256KiB", max_image_bytes="64KiB")
    assert mw.storage._handle is None  # opened lazily, on the first request
    _killed_holder(str(tmp_path / "cache"), mw.storage.map_size, "read")
    statuses = _churn_past_the_map(mw, churn_origin(fault_origin), 0)
    assert set(statuses) == {"fic; fwd=miss; stored"}


def test_reader_killed_while_the_cache_runs_never_fails_a_request(
        make_mw: Any, fault_origin: FaultOrigin, tmp_path: Path) -> None:
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="256KiB", max_image_bytes="64KiB")
    image = churn_origin(fault_origin)
    assert call(mw, image(0)[0]).status == 200  # the environment is open in this process
    _killed_holder(str(tmp_path / "cache"), mw.storage.map_size, "read")
    _churn_past_the_map(mw, image, 1)


def test_reader_killed_while_the_cache_runs_keeps_it_storing(
        make_mw: Any, fault_origin: FaultOrigin, tmp_path: Path) -> None:
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="256KiB", max_image_bytes="64KiB")
    image = churn_origin(fault_origin)
    assert call(mw, image(0)[0]).status == 200
    _killed_holder(str(tmp_path / "cache"), mw.storage.map_size, "read")
    statuses = _churn_past_the_map(mw, image, 1)
    assert set(statuses) == {"fic; fwd=miss; stored"}


@pytest.mark.parametrize("opened", [False, True], ids=["before open", "while open"])
def test_writer_killed_inside_its_transaction(make_mw: Any, fault_origin: FaultOrigin,
                                              tmp_path: Path, opened: bool) -> None:
    """kill -9 of a process in the middle of a write transaction: LMDB's robust writer lock
    is recovered, the uncommitted write never shows, and the cache keeps writing."""
    mw = make_mw(origins={"f": fault_origin.base}, max_bytes="256KiB", max_image_bytes="64KiB")
    image = churn_origin(fault_origin)
    if opened:
        assert call(mw, image(0)[0]).status == 200
    cache_dir = str(tmp_path / "cache")
    _killed_holder(cache_dir, mw.storage.map_size, "write")
    started = time.monotonic()
    path, body = image(1)
    answer = call(mw, path)
    assert time.monotonic() - started < 5
    assert_sane(answer, body)
    assert answer.headers["Cache-Status"] == "fic; fwd=miss; stored"
    assert set(_churn_past_the_map(mw, image, 2)) == {"fic; fwd=miss; stored"}
    assert b"w" * 16 not in stored_bodies(mw)
    mw.close()
    assert run_verify(cache_dir).returncode == 0
