"""README.md's code blocks, run as a reader would run them, so the README stays true.

Conventions the README is written to:

- Every fenced ```python block runs (``exec``) as a module of its own, in a temporary
  working directory, with no ``FIC_*`` variables but the one below. None is skipped: a
  block that cannot run here does not belong in the README.
- Placeholders: ``https://images.example.com`` and ``https://example.org``, the public
  hosts of the examples, become a local origin on 127.0.0.1 that answers a PNG at any
  ``/media/...`` or ``/img/...`` path; ``/var/cache/fic`` becomes a fresh directory. Since
  the stand-in is on loopback, which a real public origin is not, a block naming one of
  those hosts runs with ``FIC_ALLOWED_NETWORKS=127.0.0.1/32`` (its own keyword arguments
  beat it, as they would for the reader).
- A block that leaves a WSGI app in ``app`` or ``application`` is exercised with werkzeug's
  test client: each ``/_fic/o/...`` path its text names and each image of its page ``/``
  (which renders ``fic_url``) must be served, a miss stored and then a hit.
- ```ini blocks: a PasteDeploy pipeline is loaded with ``loadapp`` and exercised the same
  way; a ``[fic]`` section, like a ```toml block, is loaded as ``config_file``.
- ```sh blocks: every ``fic ...`` command line parses with the ``fic`` parser, and
  ``fic COMMAND --help`` of the venv's ``fic`` succeeds.
- Every ``FIC_*`` variable and every option-like name in backticks exists in the option table.

docs/RESPONSES.md is checked against the code in tests/test_docs.py.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
import signal
import subprocess
import sys
import types
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from paste.deploy import loadapp
from werkzeug.test import Client
from werkzeug.wrappers import Request, Response

from fic_middleware import FastImageCache, cli, responses
from fic_middleware.config import OPTION_NAMES, Config

from .conftest import Origin
from .servers import ROOT

README = ROOT / "README.md"
TEXT = README.read_text(encoding="utf-8")
PLACEHOLDER_HOSTS = ("https://images.example.com", "https://example.org")
CACHE_DIR = "/var/cache/fic"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@dataclasses.dataclass(frozen=True)
class Block:
    lang: str
    code: str
    line: int  # of the opening fence

    def __str__(self) -> str:
        return f"README.md:{self.line}"


def blocks(lang: str) -> list[Block]:
    found, lines = [], TEXT.splitlines()
    i = 0
    while i < len(lines):
        fence = re.fullmatch(r"```(\w*)\s*", lines[i])
        if fence is None:
            i += 1
            continue
        end = lines.index("```", i + 1)
        found.append(Block(fence.group(1), "\n".join(lines[i + 1:end]) + "\n", i + 1))
        i = end + 1
    return [b for b in found if b.lang == lang]


def params(lang: str) -> list[Any]:
    return [pytest.param(b, id=f"line{b.line}") for b in blocks(lang)]


class ReadmeOrigin(Origin):
    """The tests' origin, with the README's ``/media/...`` paths as images too."""

    def do_media(self, request: Request, rest: str) -> Response:
        return self.do_img(request, rest)


@pytest.fixture(scope="module")
def readme_origin() -> Iterator[ReadmeOrigin]:
    origin = ReadmeOrigin()
    yield origin
    origin.server.shutdown()
    origin.server.server_close()


@pytest.fixture
def local(readme_origin: ReadmeOrigin, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Any:
    """``local(code)``: the code with placeholders replaced, its environment set up."""
    for key in [k for k in os.environ if k.startswith("FIC_")]:
        monkeypatch.delenv(key)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.syspath_prepend(str(ROOT))  # for `call:examples.paste_app:...`

    def local(code: str) -> str:
        if any(host in code for host in PLACEHOLDER_HOSTS):
            monkeypatch.setenv("FIC_ALLOWED_NETWORKS", "127.0.0.1/32")
        for host in PLACEHOLDER_HOSTS:
            code = code.replace(host, readme_origin.base)
        return code.replace(CACHE_DIR, str(tmp_path / "cache"))
    return local


class Images(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.srcs += [v for k, v in attrs if tag == "img" and k == "src" and v]


def exercise(app: Any, text: str, origin: ReadmeOrigin) -> list[str]:
    """Every image the block names or its page shows, fetched through ``app``: a miss that
    the local origin answered and was stored, then a hit. The paths fetched."""
    client = Client(app)
    paths = set(re.findall(r"/_fic/o/[\w-]+/[\w./-]+", text))
    page = client.get("/")
    assert page.status_code < 500, page.get_data(as_text=True)  # e.g. fic_url raised
    if page.status_code == 200 and page.mimetype == "text/html":
        parser = Images()
        parser.feed(page.get_data(as_text=True))
        assert parser.srcs, "the page shows no image"
        paths.update(parser.srcs)
    for path in sorted(paths):
        assert path.startswith("/_fic/"), f"{path}: not served by the middleware"
        fetched = sum(origin.hits.values())
        first = client.get(path)
        assert first.status_code == 200, (path, first.status, first.get_data(as_text=True))
        assert first.headers["Cache-Status"] == "fic; fwd=miss; stored", path
        assert first.get_data().startswith(PNG_MAGIC), path
        assert sum(origin.hits.values()) == fetched + 1, f"{path}: not from the local origin"
        again = client.get(path)
        assert again.headers["Cache-Status"] == responses.HIT, path
        assert again.get_data() == first.get_data(), path
    return sorted(paths)


@contextlib.contextmanager
def deadline(seconds: float, block: Block) -> Iterator[None]:
    """Fail a block that runs longer than ``seconds`` (SIGALRM interrupts a blocking call)."""
    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"{block} did not return within {seconds} s "
                           "(a server started outside `if __name__ == '__main__':`?)")
    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def middlewares(value: Any) -> list[FastImageCache]:
    """The middlewares a block built (to close them): bare, in Flask or in Pyramid."""
    found = [value] if isinstance(value, FastImageCache) else []
    found += [getattr(value, "wsgi_app", None)]
    found += [getattr(value, "extensions", {}).get("fic_middleware")]
    registry = getattr(value, "registry", None)
    found += [registry.get("fic_middleware")] if isinstance(registry, dict) else []
    return [mw for mw in dict.fromkeys(found) if isinstance(mw, FastImageCache)]


# --- python ----------------------------------------------------------------------------------

@pytest.mark.parametrize("block", params("python"))
def test_python_block_runs(block: Block, local: Any, readme_origin: ReadmeOrigin,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    # A module of its own, as the reader's file would be (Pyramid looks its caller up).
    module = types.ModuleType("readme_block")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    namespace = module.__dict__
    with deadline(60, block):  # a block that starts a server would never return
        exec(compile(local(block.code), str(block), "exec"), namespace)
    built = [mw for value in namespace.values() for mw in middlewares(value)]
    try:
        app = namespace.get("app") or namespace.get("application")
        if built:
            assert app is not None, f"{block} builds a middleware but leaves no app to serve"
            readme_origin.reset()
            assert exercise(app, block.code, readme_origin), f"{block}: no image exercised"
    finally:
        for mw in dict.fromkeys(built):
            mw.close()


def test_every_integration_is_exercised() -> None:
    """The framework sections each have a block that builds an app (run above)."""
    code = "".join(b.code for b in blocks("python"))
    for used in ("init_app", "fic_url", "fic_middleware.pyramid", "bottle.Bottle",
                 "render_template_string"):
        assert used in code, used


# --- ini, toml -------------------------------------------------------------------------------

@pytest.mark.parametrize("block", params("ini"))
def test_ini_block_loads(block: Block, local: Any, tmp_path: Path,
                         readme_origin: ReadmeOrigin) -> None:
    ini = tmp_path / "readme.ini"
    ini.write_text(local(block.code))
    if "[pipeline:main]" in block.code:
        app = loadapp(f"config:{ini}")
        assert isinstance(app, FastImageCache)
        try:
            readme_origin.reset()
            assert exercise(app, block.code, readme_origin)
        finally:
            app.close()
    else:
        assert block.code.startswith("[fic]\n"), f"{block}: neither a pipeline nor [fic]"
        assert Config.load(config_file=str(ini)).origins


@pytest.mark.parametrize("block", params("toml"))
def test_toml_block_loads(block: Block, local: Any, tmp_path: Path) -> None:
    toml = tmp_path / "readme.toml"
    toml.write_text(local(block.code))
    assert Config.load(config_file=str(toml)).origins


# --- sh ----------------------------------------------------------------------------------------

def fic_commands() -> list[Any]:
    """Every ``fic ...`` command line of the sh blocks, as argv without the program."""
    found = []
    for block in blocks("sh"):
        for line in block.code.replace("\\\n", " ").splitlines():
            argv = shlex.split(line, comments=True)
            while argv and re.fullmatch(r"[A-Z_]+=.*", argv[0]):  # VAR=value prefixes
                argv.pop(0)
            if argv and Path(argv[0]).name == "fic":
                found.append(pytest.param(argv[1:], id=" ".join(argv[:2])))
    return found


def test_readme_shows_fic_commands() -> None:
    assert len(fic_commands()) >= 7


@pytest.mark.parametrize("argv", fic_commands())
def test_fic_command_line_parses(argv: list[str]) -> None:
    try:
        args, extras = cli.parser().parse_known_args(argv)
    except SystemExit as exc:
        pytest.fail(f"fic {' '.join(argv)}: exit {exc.code}")
    assert extras == []
    assert callable(args.run)


@pytest.mark.parametrize("command", sorted({p.values[0][0] for p in fic_commands()}))
def test_fic_command_help_runs_from_the_venv(command: str) -> None:
    """README says `fic` is in the virtualenv's bin."""
    fic = Path(sys.executable).parent / "fic"
    result = subprocess.run([str(fic), command, "--help"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"usage: fic {command}" in result.stdout


# --- names -------------------------------------------------------------------------------------

# FIC_* names the README mentions as what is *not* an option (Kubernetes service variables).
NOT_OPTIONS = {"FIC_PORT", "FIC_SERVICE_HOST"}
# Identifiers in backticks that are not options (metric names are checked below).
NOT_OPTION_WORDS = {"fic_url", "sign_url"}


def test_every_fic_variable_is_an_option() -> None:
    for name in set(re.findall(r"\bFIC_[A-Z0-9_]+", TEXT)):
        if name in NOT_OPTIONS:
            assert name[4:].lower() not in OPTION_NAMES
            continue
        option = name[4:].lower()
        if option.startswith("origin_headers_"):
            option = "origin_headers"
        assert option in OPTION_NAMES, name


def test_every_option_name_in_backticks_is_an_option() -> None:
    words = set(re.findall(r"`([a-z][a-z0-9]*(?:_[a-z0-9]+)+)`", TEXT))
    words |= set(re.findall(r"`fic\.([a-z_]+)", TEXT))  # Pyramid settings
    unknown = sorted(w for w in words - set(metric_names())
                     if w not in OPTION_NAMES and w not in NOT_OPTION_WORDS)
    assert unknown == []


def metric_names() -> list[str]:
    """The Prometheus metrics README lists, as exposed (counters end in ``_total``)."""
    return re.findall(r"`(fic_[a-z_]+?)(?:\{\w+\})?`", TEXT.replace("`fic_url`", ""))


def test_readme_lists_the_metrics_exposed(tmp_path: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    mw = FastImageCache(lambda environ, start_response: [], cache_dir=str(tmp_path / "cache"),
                        admin_token="token")
    try:
        body, _ = mw.operations.metrics()
    finally:
        mw.close()
    exposed = {family.name for family in text_string_to_metric_families(body.decode())}
    assert {name.removesuffix("_total") for name in metric_names()} == exposed


def test_every_path_the_readme_names_exists() -> None:
    named = re.findall(r"\b(?:docs|examples|scripts|benchmarks|tests|fic_middleware)/[\w./-]*\w",
                       TEXT)
    missing = sorted({p for p in named if not (ROOT / p).exists()})
    assert missing == []


def test_readme_explains_every_cache_status() -> None:
    constants = [v for v in vars(responses).values() if isinstance(v, str) and v.startswith("fic;")]
    for value in constants:
        assert f"`{value}`" in TEXT, value


def test_every_contents_link_names_a_heading() -> None:
    """Anchors as GitHub makes them: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#{1,6} (.+)$", TEXT, re.MULTILINE)
    slugs = {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}
    anchors = re.findall(r"\]\(#([\w-]+)\)", TEXT)
    assert len(anchors) >= 10
    assert sorted(set(anchors) - slugs) == []
