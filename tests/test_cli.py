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
from fic_middleware.config import OPTIONS

from .conftest import Origin
from .images import png
from .servers import free_port, get, gunicorn, wait_for

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
    for command in ("serve", "stats", "purge", "verify", "warm", "gc"):
        result = fic(command, "--help")
        assert result.returncode == 0 and "--cache-dir" in result.stdout, command
    assert "--signing-key" in fic("sign", "--help").stdout


@pytest.mark.parametrize(("command", "absent"), [
    pytest.param("stats", ["--connect-timeout", "--signing-key", "--admin-token"], id="stats"),
    pytest.param("verify", ["--origins", "--max-ttl"], id="verify"),
    pytest.param("sign", ["--cache-dir", "--max-bytes"], id="sign"),
    pytest.param("gc", ["--origins", "--retries"], id="gc"),
])
def test_help_lists_only_the_options_the_command_uses(command: str, absent: list[str]) -> None:
    shown = fic(command, "--help").stdout
    assert [flag for flag in absent if flag in shown] == []


def test_serve_help_groups_every_option_with_its_default() -> None:
    shown = fic("serve", "--help").stdout
    flags = {"--" + o.name.replace("_", "-") for o in OPTIONS if o.name != "origin_headers"}
    assert [f for f in sorted(flags) if f not in shown] == []
    assert "origin fetches:" in shown and "freshness:" in shown
    assert "Upper bound of stored image bytes. (default: 1GiB)" in shown
    assert "(default: 30d)" in shown  # max_ttl, as one would write it


@pytest.mark.parametrize("args", [
    pytest.param(["stats"], id="stats"),
    pytest.param(["verify"], id="verify"),
    pytest.param(["purge", "--all"], id="purge"),
    pytest.param(["gc"], id="gc"),
])
def test_read_only_commands_refuse_a_missing_cache(tmp_path: Path, args: list[str]) -> None:
    missing = tmp_path / "mistyped"
    result = fic(*args, "--cache-dir", str(missing))
    assert (result.returncode, result.stderr.strip()) == (
        2, f"fic {args[0]}: error: no cache at {missing}")
    assert not missing.exists()


def test_a_mistyped_flag_shows_the_commands_usage_and_a_suggestion() -> None:
    result = fic("stats", "--cache-dri", "/tmp/x")
    assert result.returncode == 2
    assert result.stderr.startswith("usage: fic stats ")
    assert "did you mean --cache-dir?" in result.stderr


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
    assert report["failed"][0]["error"].startswith("404 ")
    assert [f["line"] for f in report["failed"]] == [f"{origin.base}/status/404"]
    assert {"/img/w1.png", "/img/w2.png", "/img/w3.png"} <= set(origin.hits)
    assert json.loads(fic("stats", *flags).stdout)["storage"]["entries"] >= 3


def test_warm_gives_the_reason_of_a_refusal(tmp_path: Path, origin: Origin) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text(f"{origin.base}/img/w.png\n")
    # A signed remote URL on loopback, without allowed_networks: the address policy refuses.
    result = fic("warm", str(listing), "--cache-dir", str(tmp_path / "cache"),
                 "--signing-key", KEY)
    assert json.loads(result.stdout)["failed"] == [
        {"line": f"{origin.base}/img/w.png", "error": "403 target address not allowed"}]


def test_warm_speaks_of_the_line_not_of_fic_url(tmp_path: Path) -> None:
    listing = tmp_path / "list.txt"
    listing.write_text("cdn/cat.png\n")
    result = fic("warm", str(listing), "--cache-dir", str(tmp_path / "cache"))
    (failure,) = json.loads(result.stdout)["failed"]
    assert failure["error"].startswith("'cdn/cat.png' is neither an absolute")


def test_warm_without_its_file_is_a_usage_error(tmp_path: Path) -> None:
    result = fic("warm", str(tmp_path / "absent.txt"), "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "cannot read" in result.stderr and "absent.txt" in result.stderr


def test_purge_path_without_origins_asks_for_them(cache: Any, tmp_path: Path) -> None:
    result = fic("purge", "--path", "/_fic/o/t/img/a.png", "--cache-dir", str(tmp_path / "cache"))
    assert result.returncode == 2
    assert "origin 't', which is not configured" in result.stderr
    assert "--origins t=URL" in result.stderr


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


def test_standalone_under_gunicorn(tmp_path: Path, origin: Origin) -> None:
    """``fic serve`` for production: the same app, configured from FIC_* variables."""
    env = {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"t={origin.base}",
           "FIC_ALLOWED_NETWORKS": "127.0.0.1/32"}
    with gunicorn("fic_middleware.cli:standalone()", env) as base:
        status, headers, body = get(f"{base}/_fic/o/t/img/g.png")
        assert (status, body) == (200, png("g.png"))
        assert get(f"{base}/other")[0] == 404
