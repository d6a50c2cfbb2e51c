"""The examples as a user runs them: the sample origin and each example app under a real
gunicorn (2 workers, one LMDB directory), and ``scripts/demo`` itself, Ctrl-C included.

Every process runs in its own session, so a finalizer can stop its whole group (gunicorn's
workers too) whatever the test did.
"""

from __future__ import annotations

import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest

from .servers import NO_CONTROL_SOCKET, ROOT, free_port, get

pytestmark = pytest.mark.slow

IMAGE_NAMES: tuple[str, ...] = runpy.run_path(str(ROOT / "examples" / "origin.py"))["IMAGE_NAMES"]
Spawn = Callable[[str, list[str], dict[str, str]], tuple[subprocess.Popen[bytes], Path, Path]]


def wait_for_line(path: Path, pattern: str, process: subprocess.Popen[bytes],
                  timeout: float) -> re.Match[str]:
    """The first match of ``pattern`` in the file a process writes, or a failure with its log."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if m := re.search(pattern, path.read_text(errors="replace")):
            return m
        if process.poll() is not None:
            break
        time.sleep(0.05)
    logs = "\n".join(p.read_text(errors="replace")
                     for p in sorted(path.parent.glob(f"{path.stem}.*")))
    pytest.fail(f"no {pattern!r} from {process.args!r} (exit {process.poll()}):\n{logs}")


def clean_env(**extra: str) -> dict[str, str]:
    """The environment without FIC_* variables (the test's own options only)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIC_")}
    return {**env, **extra}


def stop_group(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    """Stop a process and everything in its process group, forcefully after 15 s."""
    for s in (sig, signal.SIGKILL):
        try:
            os.killpg(process.pid, s)
        except ProcessLookupError:
            pass
        try:
            process.wait(timeout=15)
            return
        except subprocess.TimeoutExpired:
            continue


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def processes() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state, command line) of every process, from /proc."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # exited meanwhile
            continue
        state, ppid = stat.rsplit(")", 1)[1].split()[:2]
        found[int(entry.name)] = (int(ppid), state, cmdline)
    return found


def descendants(pid: int) -> dict[int, str]:
    """Live descendants of ``pid``: pid -> command line."""
    table = processes()
    found: dict[int, str] = {}
    parents = {pid}
    while parents:
        children = {p for p, (ppid, state, _) in table.items() if ppid in parents and state != "Z"}
        found.update((p, table[p][2]) for p in children)
        parents = children
    return found


def alive(pid: int) -> bool:
    entry = processes().get(pid)
    return entry is not None and entry[1] != "Z"


class ImageSources(HTMLParser):
    """The images of a page: ``src``, or ``data-src`` where the page's script loads them."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "img":
            self.srcs.extend(v for k, v in attrs if k in ("src", "data-src") and v)


def image_srcs(html: bytes) -> list[str]:
    parser = ImageSources()
    parser.feed(html.decode())
    parser.close()
    return parser.srcs


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Spawn]:
    """Start processes in their own sessions, output to files; all stopped at teardown."""
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str, args: list[str], env: dict[str, str]
              ) -> tuple[subprocess.Popen[bytes], Path, Path]:
        out, err = tmp_path / f"{name}.out", tmp_path / f"{name}.err"
        with out.open("wb") as stdout, err.open("wb") as stderr:
            process = subprocess.Popen(args, cwd=ROOT, env=env, stdout=stdout, stderr=stderr,
                                       stdin=subprocess.DEVNULL, start_new_session=True)
        started.append(process)
        return process, out, err

    yield start
    for process in reversed(started):
        stop_group(process)


@pytest.fixture
def origin_url(spawn: Spawn) -> str:
    """The sample origin as the README runs it; its base URL."""
    process, out, _ = spawn("origin", [sys.executable, "examples/origin.py", "--port", "0"],
                            clean_env())
    url = wait_for_line(out, r"ready: (http://127\.0\.0\.1:\d+/images)\n", process, 30).group(1)
    assert out.read_text().count("\n") == 1, "the origin prints a single line"
    return url


@pytest.mark.parametrize("app_args", [
    pytest.param(["examples.flask_app.app:app"], id="flask"),
    pytest.param(["--chdir", "examples/flask_app", "app:app"], id="flask-chdir"),
    pytest.param(["examples.pyramid_app.app:app"], id="pyramid"),
])
def test_example_under_gunicorn(spawn: Spawn, origin_url: str, tmp_path: Path,
                                app_args: list[str]) -> None:
    env = clean_env(FIC_CACHE_DIR=str(tmp_path / "cache"), FIC_ORIGINS=f"demo={origin_url}",
                    FIC_ALLOWED_NETWORKS="127.0.0.1/32")
    # Port 0: gunicorn binds a free port itself and logs it, so no other process can take it.
    master, _, err = spawn("gunicorn", [
        sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:0",
        *NO_CONTROL_SOCKET, *app_args], env)
    base = wait_for_line(err, r"Listening at: (http://127\.0\.0\.1:\d+)", master, 30).group(1)
    deadline = time.monotonic() + 30
    while len(descendants(master.pid)) < 2:
        assert master.poll() is None and time.monotonic() < deadline, err.read_text()
        time.sleep(0.05)

    status, headers, page = get(f"{base}/")
    assert (status, headers["Content-Type"]) == (200, "text/html; charset=utf-8")
    srcs = image_srcs(page)
    assert sorted(srcs) == sorted(f"/_fic/o/demo/{name}.png" for name in IMAGE_NAMES)

    # Each request is a new connection, answered by either worker: the second one is a hit
    # wherever it lands, because both workers share the LMDB directory.
    for src in srcs:
        _, _, expected = get(f"{origin_url}/{src.rsplit('/', 1)[1]}")
        assert expected.startswith(b"\x89PNG\r\n\x1a\n")
        for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
            status, headers, body = get(base + src)
            assert (status, headers["Cache-Status"], headers["Content-Type"]) == \
                (200, cache_status, "image/png"), src
            assert body == expected, src
    assert master.poll() is None, err.read_text()


def test_scripts_demo(spawn: Spawn, tmp_path: Path) -> None:
    port, origin_port = free_port(), free_port()
    # XDG_RUNTIME_DIR: gunicorn's control socket goes there instead of the user's home.
    env = clean_env(PORT=str(port), ORIGIN_PORT=str(origin_port),
                    DEMO_CACHE_DIR=str(tmp_path / "cache"), XDG_RUNTIME_DIR=str(tmp_path))
    demo, out, err = spawn("demo", [str(ROOT / "scripts" / "demo")], env)
    # Generous: the first run on a machine may create .venv and pip install.
    url = wait_for_line(out, rf"\n(http://127\.0\.0\.1:{port}/)\n\Z", demo, 300).group(1)
    printed = out.read_text()
    assert err.read_text() == "" and "pip" not in printed and "gunicorn" not in printed
    token = re.search(r"admin token: (\S+)", printed)
    assert token and "/_fic/_admin/" in printed

    status, _, page = get(url)
    assert status == 200
    src = image_srcs(page)[0]
    status, headers, body = get(url.rstrip("/") + src)
    assert (status, headers["Cache-Status"]) == (200, "fic; fwd=miss; stored")
    assert body.startswith(b"\x89PNG")
    assert os.listdir(tmp_path / "cache"), "DEMO_CACHE_DIR holds the cache"
    assert get(f"{url}_fic/_admin/stats", {"Authorization": f"Bearer {token[1]}"})[0] == 200
    assert 'href="/_fic/_admin/"' in page.decode()

    children = descendants(demo.pid)
    servers = [pid for pid, cmd in children.items() if "gunicorn" in cmd]
    origins = [pid for pid, cmd in children.items() if "examples/origin.py" in cmd]
    assert len(servers) == 3 and len(origins) == 1, children  # master, 2 workers; origin
    assert f"--port {origin_port}" in children[origins[0]]

    # Ctrl-C in a terminal: SIGINT to the whole foreground process group.
    os.killpg(demo.pid, signal.SIGINT)
    assert demo.wait(timeout=30) == 130, (out.read_text())
    assert not [pid for pid in children if alive(pid)], "gunicorn and the origin are stopped"
    assert not group_alive(demo.pid)


def test_scripts_demo_takes_the_admin_token_given(spawn: Spawn, tmp_path: Path) -> None:
    port = free_port()
    env = clean_env(PORT=str(port), ORIGIN_PORT=str(free_port()), FIC_ADMIN_TOKEN="given-token",
                    DEMO_CACHE_DIR=str(tmp_path / "cache"), XDG_RUNTIME_DIR=str(tmp_path))
    demo, out, _ = spawn("demo", [str(ROOT / "scripts" / "demo")], env)
    wait_for_line(out, rf"\n(http://127\.0\.0\.1:{port}/)\n\Z", demo, 300)
    assert "admin token: given-token\n" in out.read_text()
    status, _, _ = get(f"http://127.0.0.1:{port}/_fic/_admin/stats",
                       {"Authorization": "Bearer given-token"})
    assert status == 200


def test_demo_page_labels_each_image_from_its_own_response(spawn: Spawn, origin_url: str,
                                                           tmp_path: Path) -> None:
    """In a real browser: one GET per image and page load (no separate probe), the label is
    that response's Cache-Status, and a reload reaches the server (a hit, not the browser's
    own cache)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from .test_admin_deployed import chromium

    access = tmp_path / "access.log"
    env = clean_env(FIC_CACHE_DIR=str(tmp_path / "cache"), FIC_ORIGINS=f"demo={origin_url}",
                    FIC_ALLOWED_NETWORKS="127.0.0.1/32")
    master, _, err = spawn("gunicorn", [
        sys.executable, "-m", "gunicorn", "--workers", "2", "--bind", "127.0.0.1:0",
        "--access-logfile", str(access), *NO_CONTROL_SOCKET, "examples.flask_app.app:app"], env)
    base = wait_for_line(err, r"Listening at: (http://127\.0\.0\.1:\d+)", master, 30).group(1)

    def image_requests() -> list[str]:
        return re.findall(r'"([A-Z]+) /_fic/o/demo/', access.read_text())

    browser = chromium()
    try:
        for expected in ("fic; fwd=miss; stored", "fic; hit"):
            browser.get(f"{base}/")
            WebDriverWait(browser, 15).until(lambda b: all(
                label.text == expected for label in b.find_elements(By.CSS_SELECTOR, "figcaption code")))
            WebDriverWait(browser, 15).until(lambda b: b.execute_script(
                "return [...document.images].every(i => i.complete && i.naturalWidth === 160)"))
        WebDriverWait(browser, 15).until(lambda b: len(image_requests()) >= 2 * len(IMAGE_NAMES))
        assert image_requests() == ["GET"] * (2 * len(IMAGE_NAMES))
    finally:
        browser.quit()


# podman as this machine runs it: vfs storage (no overlay mounts in a VM), runc (crun refuses
# hybrid cgroups), limits no higher than the host's hard ones (no CAP_SYS_RESOURCE).
PODMAN = ["podman", "--storage-driver", "vfs", *(["--runtime", "runc"] if shutil.which("runc")
                                                  else [])]
LIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096"]
# A proxy here re-signs TLS: the build trusts what the host trusts (only where it exists).
HOST_TRUST = [arg for path in ("/etc/ssl/certs/ca-certificates.crt", "/etc/pip.conf")
              if os.path.exists(path) for arg in ("--volume", f"{path}:{path}:ro")]
IMAGE = "localhost/fic-middleware-test"


def podman(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*PODMAN, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_dockerfile_serves_as_a_non_root_user_with_the_cache_on_a_volume(
        origin_url: str, tmp_path: Path) -> None:
    """scripts/test installs podman and makes the base image (no registry is reachable)."""
    assert podman("image", "exists", "debian:bookworm-slim").returncode == 0, \
        "no debian:bookworm-slim image: run scripts/test, which makes it"
    # The context holds what the Dockerfile copies, not .venv (sending it takes minutes).
    context = tmp_path / "context"
    shutil.copytree(ROOT / "fic_middleware", context / "fic_middleware",
                    ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, context / name)
    build = podman("build", "--network", "host", *LIMITS, *HOST_TRUST, "-f",
                   str(ROOT / "examples" / "Dockerfile"), "-t", IMAGE, str(context), timeout=1200)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    port, name = free_port(), f"fic-test-{os.getpid()}"
    run = podman("run", "-d", "--name", name, "--network", "host", *LIMITS,
                 "-e", f"FIC_ORIGINS=demo={origin_url}", "-e", "FIC_ALLOWED_NETWORKS=127.0.0.1/32",
                 "-e", f"GUNICORN_CMD_ARGS=--bind 127.0.0.1:{port} --workers 2",
                 "-v", f"{name}:/var/cache/fic", IMAGE)
    try:
        assert run.returncode == 0, run.stderr
        deadline = time.monotonic() + 60
        while True:
            try:
                get(f"http://127.0.0.1:{port}/", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, podman("logs", name).stderr
                time.sleep(0.2)
        for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
            status, headers, body = get(f"http://127.0.0.1:{port}/_fic/o/demo/dusk.png")
            assert (status, headers["Cache-Status"]) == (200, cache_status)
            assert body.startswith(b"\x89PNG")
        assert podman("exec", name, "id", "-u").stdout.strip() == "10001"
        mountpoint = podman("volume", "inspect", "--format", "{{.Mountpoint}}", name).stdout
        assert (Path(mountpoint.strip()) / "data.mdb").is_file(), "the cache is on the volume"
    finally:
        podman("rm", "-f", name)
        podman("volume", "rm", "-f", name)
