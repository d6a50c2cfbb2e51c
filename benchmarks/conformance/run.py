"""Runs the HTTP working group's cache test suite (cache-tests.fyi) against fic_middleware.

    benchmarks/run conformance [--suite DIR] [--json FILE] [--report FILE] [--fic NAME=VALUE]...

    suite client --> front --> gunicorn: FastImageCache(404 app) --> shim --> suite server
                 \\-> front --(/config, /state)-----------------------------> suite server

Everything listens on 127.0.0.1 (the suite's server too: ``loopback.cjs``). See
benchmarks/conformance/README.md for what the front and the shim change.

The suite comes from ``--suite DIR`` or ``$FIC_CACHE_TESTS`` (a git checkout of
github.com/http-tests/cache-tests: the version cache-tests.fyi publishes results for); without
either, from the npm registry (``http-cache-tests``, an older release with fewer tests) into
``~/.cache/fic-conformance``. Nothing of the suite is kept in this repository.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import proxies  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PREFIX = "/_fic"
ORIGIN = "suite"
NPM_PACKAGE = "http-cache-tests"
# The configuration under test: defaults, except what the adapter needs (its origin on
# loopback, queries forwarded since the suite's URLs carry them), min_ttl=0, so that the
# origin's freshness is used as it is, and no circuit breaker.
FIC_DEFAULTS = {
    "FIC_PREFIX": PREFIX,
    "FIC_BACKEND": "lmdb",
    "FIC_FORWARD_QUERY": "true",
    "FIC_ALLOWED_NETWORKS": "127.0.0.1/32",
    "FIC_MIN_TTL": "0",
    # One origin host answers all 365 tests, dozens of them with deliberate 5xx and hang-ups:
    # the circuit breaker would fail every other test's misses for breaker_cooldown.
    "FIC_BREAKER_FAILURES": "0",
}
# pass_headers for the suite: its bookkeeping headers (how it tells a cached answer from a
# fetched one), the test headers it checks are stored, and the defaults.
SUITE_PASS_HEADERS = (
    "Server-Request-Count Client-Request-Count Server-Now Server-Base-Url Request-Numbers "
    "Test-Header X-Test-Header Content-Foo X-Content-Foo Template-A A B C Clear-Site-Data "
    "Content-Location Content-MD5 Content-Language Public-Key-Pins X-Frame-Options "
    "X-XSS-Protection Expires Pragma Warning Access-Control-Allow-Origin Timing-Allow-Origin "
    "Content-Disposition Link")


def locate_suite(given: str | None) -> Path:
    """The suite's directory, with its node dependencies installed."""
    if given:
        suite = Path(given).resolve()
        if not (suite / "tests" / "index.mjs").exists():
            sys.exit(f"{suite}: not a checkout of http-tests/cache-tests (no tests/index.mjs)")
        if not (suite / "node_modules").exists():
            print(f"installing the suite's dependencies in {suite} (npm install)...", file=sys.stderr)
            subprocess.run(["npm", "install", "--omit=dev", "--no-audit", "--no-fund"],
                           cwd=suite, check=True, stdout=sys.stderr)
        return suite
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fic-conformance"
    suite = cache / "node_modules" / NPM_PACKAGE
    if not (suite / "tests" / "index.mjs").exists():
        print(f"installing {NPM_PACKAGE} from the npm registry into {cache}...", file=sys.stderr)
        cache.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--prefix", str(cache), "--no-audit", "--no-fund",
                        NPM_PACKAGE], check=True, stdout=sys.stderr)
    return suite


def engine_file(suite: Path, name: str) -> Path:
    """Git checkouts keep the engine under test-engine/; the npm release at the top."""
    for candidate in (suite / "test-engine" / name, suite / name):
        if candidate.exists():
            return candidate
    sys.exit(f"{suite}: no {name}")


def wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            sys.exit(f"{what} exited with status {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    sys.exit(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def clean_env() -> dict[str, str]:
    """No proxy from the environment may see the loopback traffic; no stray FIC_* option."""
    return {k: v for k, v in os.environ.items()
            if not k.lower().endswith("_proxy") and not k.startswith(("FIC_", "npm_"))}


def fic_env(args: argparse.Namespace, shim_port: int, cache_dir: str) -> dict[str, str]:
    env = dict(FIC_DEFAULTS, FIC_CACHE_DIR=cache_dir, FIC_ORIGINS=f"{ORIGIN}=http://127.0.0.1:{shim_port}")
    if not args.default_pass_headers:
        env["FIC_PASS_HEADERS"] = SUITE_PASS_HEADERS
    for item in args.fic:
        name, sep, value = item.partition("=")
        if not sep:
            sys.exit(f"--fic {item!r}: expected NAME=VALUE (an option of the README's table)")
        env[f"FIC_{name.upper()}"] = value
    return env


def run(args: argparse.Namespace) -> int:
    suite = locate_suite(args.suite or os.environ.get("FIC_CACHE_TESTS"))
    base_env = clean_env()
    processes: list[subprocess.Popen[bytes]] = []
    servers: list[proxies.Server] = []
    tmp = tempfile.mkdtemp(prefix="fic-conformance-")
    try:
        origin_port = proxies.free_port()
        origin = subprocess.Popen(
            ["node", "--require", str(HERE / "loopback.cjs"), str(engine_file(suite, "server/server.mjs"))],
            cwd=suite, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env={**base_env, "npm_config_protocol": "http", "npm_config_port": str(origin_port),
                 "npm_config_pidfile": os.path.join(tmp, "origin.pid")})
        processes.append(origin)
        wait_port(origin_port, origin, "the suite's server")

        shim = proxies.shim(origin_port, args.simulate_pass_headers)
        servers.append(shim)
        cache_port = proxies.free_port()
        env = fic_env(args, shim.port, os.path.join(tmp, "cache"))
        gunicorn = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{cache_port}",
             "--worker-class", "gthread", "--workers", "1", "--threads", "64",
             "--log-level", "warning", "--timeout", "60", "benchmarks.http_apps:fic"],
            cwd=ROOT, env={**base_env, **env})
        processes.append(gunicorn)
        wait_port(cache_port, gunicorn, "gunicorn")
        front = proxies.front(origin_port, cache_port, env["FIC_PREFIX"], ORIGIN,
                              args.simulate_pass_headers)
        servers.append(front)

        print(f"suite {suite}; front 127.0.0.1:{front.port} -> fic 127.0.0.1:{cache_port} -> "
              f"shim 127.0.0.1:{shim.port} -> origin 127.0.0.1:{origin_port}", file=sys.stderr)
        print("fic options: " + " ".join(f"{k}={v}" for k, v in sorted(env.items())
                                         if k != "FIC_CACHE_DIR"), file=sys.stderr)
        cli_env = {**base_env, "npm_config_base": f"http://127.0.0.1:{front.port}",
                   "npm_config_id": args.id or "",
                   "npm_package_config_id": ""}  # what `npm run cli` sets from package.json
        cli = ["node", "--no-warnings", str(engine_file(suite, "cli.mjs"))]
        if args.id:  # the suite's own dump of one test's requests and responses
            return subprocess.run(cli, cwd=suite, env=cli_env).returncode
        started = time.monotonic()
        out = subprocess.run(cli, cwd=suite, env=cli_env, stdout=subprocess.PIPE, check=True)
        elapsed = time.monotonic() - started
    finally:
        for server in servers:
            server.close()
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(tmp, ignore_errors=True)

    results_file = Path(args.json) if args.json else Path(tempfile.mkstemp(suffix=".json")[1])
    results_file.write_bytes(out.stdout)
    scored = json.loads(subprocess.run(
        ["node", str(HERE / "score.mjs"), str(suite), str(results_file)], cwd=suite,
        stdout=subprocess.PIPE, check=True).stdout)
    if not args.json:
        results_file.unlink()
    summary = summarize(scored, suite, elapsed, env)
    print(summary)
    if args.report:
        Path(args.report).write_text(summary + "\n" + failure_table(scored))
    return 0


def summarize(scored: dict[str, object], suite: Path, elapsed: float, env: dict[str, str]) -> str:
    counts = scored["counts"]
    assert isinstance(counts, dict)
    order = ["pass", "fail", "optional_fail", "yes", "no", "dependency_fail", "setup_fail",
             "harness_fail", "retry", "not_passed"]
    return "\n".join([
        f"suite: {suite} ({suite_version(suite)})",
        f"passes: {scored['passes']} of {scored['total']} tests run ({elapsed:.0f} s)",
        "by the suite's classification: "
        + ", ".join(f"{k} {counts[k]}" for k in order if k in counts),
    ])


def suite_version(suite: Path) -> str:
    try:
        rev = subprocess.run(["git", "-C", str(suite), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True, check=True).stdout.strip()
        return f"git {rev}"
    except (OSError, subprocess.CalledProcessError):
        package = json.loads((suite / "package.json").read_text())
        return f"{package['name']} {package['version']} per package.json, not a git checkout"


def failure_table(scored: dict[str, object]) -> str:
    tests = scored["tests"]
    assert isinstance(tests, list)
    rows = ["", "| test id | kind | result | message |", "|---|---|---|---|"]
    for test in tests:
        if test["result"] in ("pass", "yes"):
            continue
        message = str(test["message"]).replace("|", "\\|").replace("\n", " ")
        rows.append(f"| `{test['id']}` | {test['kind']} | {test['result']} | {message} |")
    return "\n".join(rows) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suite", help="a checkout of http-tests/cache-tests (default: "
                        "$FIC_CACHE_TESTS, else the npm release)")
    parser.add_argument("--json", help="also write the suite's raw results (JSON) here")
    parser.add_argument("--report", help="also write the summary and every test not passed "
                        "(markdown) here")
    parser.add_argument("--id", help="run one test and show the suite's dump of it")
    parser.add_argument("--simulate-pass-headers", action="store_true",
                        help="diagnosis, not a score: the front replays the stored origin "
                        "headers the cache drops, the shim numbers the origin's requests (Req-Num)")
    parser.add_argument("--default-pass-headers", action="store_true",
                        help="keep pass_headers at its default instead of the suite's headers")
    parser.add_argument("--fic", action="append", default=[], metavar="NAME=VALUE",
                        help="a fic_middleware option for this run (repeatable)")
    return run(parser.parse_args())


if __name__ == "__main__":
    sys.exit(main())
