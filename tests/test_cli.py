"""The fic command, run as users run it (a subprocess), against a real cache directory."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import lmdb
import pytest
import webtest

from fic_middleware import sign_url

from .conftest import Origin
from .images import png
from .servers import free_port, get, wait_for

KEY = "cli-signing-key-0123456789"


def fic(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FIC_")}
    return subprocess.run([sys.executable, "-m", "fic_middleware", *args], capture_output=True,
                          text=True, timeout=60, env={**clean, **(env or {})})


@pytest.fixture
def cache(make_mw: Any, tmp_path: Path, origin: Origin) -> tuple[list[str], Any]:
    """A cache directory with three images, and the flags that name it."""
    mw = make_mw()
    client = webtest.TestApp(mw)
    for name in ("a", "b", "c"):
        client.get(f"/_fic/o/t/img/{name}.png")
    mw.close()
    flags = ["--cache-dir", str(tmp_path / "cache"), "--origins", f"t={origin.base}",
             "--allowed-networks", "127.0.0.1/32"]
    return flags, mw


def test_help_everywhere() -> None:
    assert "serve" in fic("--help").stdout
    for command in ("serve", "sign", "stats", "purge", "verify", "warm", "gc"):
        result = fic(command, "--help")
        assert result.returncode == 0 and "--cache-dir" in result.stdout, command


def test_sign_matches_sign_url() -> None:
    result = fic("sign", "https://example.com/cat.png", "--signing-key", KEY)
    assert result.returncode == 0
    assert result.stdout.strip() == sign_url("https://example.com/cat.png", KEY)


def test_sign_reads_the_key_from_the_environment() -> None:
    result = fic("sign", "https://example.com/cat.png", env={"FIC_SIGNING_KEY": KEY})
    assert result.stdout.strip() == sign_url("https://example.com/cat.png", KEY)


@pytest.mark.parametrize("args", [
    pytest.param(["sign", "https://example.com/a.png"], id="sign without a key"),
    pytest.param(["sign", "/relative", "--signing-key", KEY], id="sign a relative URL"),
    pytest.param(["stats"], id="stats without a cache dir"),
    pytest.param(["stats", "--cache-dir", "/tmp/x", "--max-bytes", "lots"], id="bad option value"),
    pytest.param(["purge", "--cache-dir", "/tmp/x"], id="purge without what"),
    pytest.param(["nope"], id="unknown command"),
])
def test_usage_and_config_errors_exit_2(args: list[str]) -> None:
    result = fic(*args)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr and result.stderr


def test_config_error_names_the_option() -> None:
    result = fic("stats", "--cache-dir", "/tmp/x", "--max-bytes", "lots")
    assert "max_bytes" in result.stderr


def test_stats(cache: Any) -> None:
    flags, _ = cache
    result = fic("stats", *flags)
    assert result.returncode == 0
    stats = json.loads(result.stdout)
    assert stats["storage"]["entries"] == 3
    assert stats["requests"]["miss"] == 3


def test_verify_clean_then_damaged(cache: Any, tmp_path: Path) -> None:
    flags, _ = cache
    result = fic("verify", *flags)
    assert (result.returncode, json.loads(result.stdout)["ok"]) == (0, 3)
    env = lmdb.open(str(tmp_path / "cache"), max_dbs=8, map_size=64 << 20)
    with env.begin(write=True, db=env.open_db(b"records")) as txn:
        key, value = next(iter(txn.cursor()))
        txn.put(key, value[:-1] + bytes([value[-1] ^ 1]))
    env.close()
    result = fic("verify", *flags)
    assert result.returncode == 1
    assert json.loads(result.stdout) == {"ok": 2, "corrupt": 1, "other_version": 0, "deleted": 0}
    assert json.loads(fic("verify", "--fix", *flags).stdout)["deleted"] == 1
    assert fic("verify", *flags).returncode == 0


def test_purge(cache: Any, origin: Origin) -> None:
    flags, _ = cache
    assert json.loads(fic("purge", "--path", "/_fic/o/t/img/a.png", *flags).stdout) == {"purged": 1}
    assert json.loads(fic("purge", "--url", f"{origin.base}/img/b.png", *flags).stdout) == {"purged": 1}
    assert json.loads(fic("purge", "--all", *flags).stdout) == {"purged": 1}
    assert fic("purge", "--path", "/_fic/o/t/../x", *flags).returncode == 2


def test_warm(tmp_path: Path, origin: Origin) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"# images to warm\n{origin.base}/img/w1.png\n/_fic/o/t/img/w2.png\n"
                       f"t/img/w3.png\n{origin.base}/status/404\n")
    flags = ["--cache-dir", str(tmp_path / "cache"), "--origins", f"t={origin.base}",
             "--allowed-networks", "127.0.0.1/32"]
    result = fic("warm", str(listing), *flags)
    assert result.returncode == 1  # one line failed
    report = json.loads(result.stdout)
    assert report["statuses"] == {"200": 3, "404": 1}
    assert [f["line"] for f in report["failed"]] == [f"{origin.base}/status/404"]
    assert {"/img/w1.png", "/img/w2.png", "/img/w3.png"} <= set(origin.hits)
    assert json.loads(fic("stats", *flags).stdout)["storage"]["entries"] >= 3


def test_gc_removes_what_cannot_be_served(make_mw: Any, tmp_path: Path, origin: Origin) -> None:
    mw = make_mw(min_ttl=0, stale_while_revalidate=0, stale_if_error=0, forward_query=True)
    client = webtest.TestApp(mw)
    client.get("/_fic/o/t/img/old.png?cc=max-age%3D0")
    client.get("/_fic/o/t/img/new.png")
    mw.close()
    flags = ["--cache-dir", str(tmp_path / "cache"), "--stale-if-error", "0",
             "--stale-while-revalidate", "0"]
    result = fic("gc", *flags)
    assert result.returncode == 0
    report = json.loads(result.stdout)
    assert report["removed_expired"] == 1 and report["storage"]["entries"] == 1


def test_serve(tmp_path: Path, origin: Origin) -> None:
    port = free_port()
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FIC_")}
    process = subprocess.Popen(
        [sys.executable, "-m", "fic_middleware", "serve", "--port", str(port),
         "--cache-dir", str(tmp_path / "cache"), "--origins", f"t={origin.base}",
         "--allowed-networks", "127.0.0.1/32"],
        env=clean, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        wait_for(f"http://127.0.0.1:{port}/", process)  # type: ignore[arg-type]
        status, headers, body = get(f"http://127.0.0.1:{port}/_fic/o/t/img/s.png")
        assert (status, body) == (200, png("s.png"))
        assert get(f"http://127.0.0.1:{port}/other")[0] == 404
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=10)
        assert process.stdout is not None
        process.stdout.close()


def test_sign_does_not_echo_url_credentials() -> None:
    result = fic("sign", "ftp://ann:s3cret@example.com/cat.png", "--signing-key", KEY)
    assert result.returncode == 2
    assert "ftp://***@example.com/cat.png" in result.stderr and "s3cret" not in result.stderr
