"""PasteDeploy: ``use = egg:fic-middleware#main``, loaded by paste.deploy, gunicorn --paste
and pserve, against the real origin."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from paste.deploy import loadapp

from fic_middleware import ConfigError, FastImageCache
from fic_middleware.paste import filter_app_factory

from .conftest import Origin, downstream
from .images import png
from .servers import ROOT, free_port, get, gunicorn, running

EXAMPLE = ROOT / "examples" / "paste.ini"


@pytest.fixture
def load(tmp_path: Path) -> Iterator[Any]:
    """loadapp() of an ini file written from ``text``; the middlewares closed at teardown."""
    loaded: list[FastImageCache] = []

    def load(text: str) -> FastImageCache:
        ini = tmp_path / "app.ini"
        ini.write_text(text)
        app = loadapp(f"config:{ini}")
        assert isinstance(app, FastImageCache)
        loaded.append(app)
        return app

    yield load
    for app in loaded:
        app.close()


def pipeline(origin: Origin, tmp_path: Path, options: str = "") -> str:
    return f"""
[pipeline:main]
pipeline = fic site

[filter:fic]
use = egg:fic-middleware#main
cache_dir = {tmp_path / "cache"}
origins =
    t={origin.base}
    other=https://images.example.com
allowed_networks = 127.0.0.1/32
{options}

[app:site]
use = call:examples.paste_app:app_factory
images = /_fic/o/t/img
"""


def example_env(origin: Origin, tmp_path: Path) -> dict[str, str]:
    """The shipped example pointed at the test origin: FIC_* variables beat the ini."""
    return {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"demo={origin.base}/img"}


def test_pipeline_serves_images_and_passes_the_rest(load: Any, origin: Origin,
                                                    tmp_path: Path) -> None:
    client = webtest.TestApp(load(pipeline(origin, tmp_path)))
    assert "fic_middleware + PasteDeploy" in client.get("/").text
    for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
        response = client.get("/_fic/o/t/img/cat.png")
        assert (response.headers["Cache-Status"], response.body) == (cache_status, png("cat.png"))
    assert origin.hits["/img/cat.png"] == 1


def test_options_are_parsed_like_the_ini_form(load: Any, origin: Origin, tmp_path: Path) -> None:
    fic = load(pipeline(origin, tmp_path, """\
max_bytes = 64MiB
read_timeout = 5s
allowed_types = image/png, image/jpeg
origin_headers.t =
    Authorization: Bearer paste-secret
    X-Tenant: demo"""))
    config = fic.config
    assert config.origins == {"t": origin.base, "other": "https://images.example.com"}
    assert (config.max_bytes, config.read_timeout) == (64 << 20, 5.0)
    assert config.allowed_types == {"image/png", "image/jpeg"}
    webtest.TestApp(fic).get("/_fic/o/t/img/auth.png")
    sent = origin.seen[-1].headers
    assert (sent["Authorization"], sent["X-Tenant"]) == ("Bearer paste-secret", "demo")


def test_default_section_is_not_ours(load: Any, origin: Origin, tmp_path: Path) -> None:
    """[DEFAULT] is paste's global_conf, shared by every section: not fic options."""
    fic = load("[DEFAULT]\ndebug = true\nsome_var = x\n" + pipeline(origin, tmp_path))
    assert fic.config.prefix == "/_fic"


@pytest.mark.parametrize(("options", "message"), [
    pytest.param("max_bytes = lots", "max_bytes: expected a size", id="bad size"),
    pytest.param("verify_tls = maybe", "verify_tls: expected true or false", id="bad bool"),
    pytest.param("cache_dirr = /tmp/x", "cache_dirr: unknown option", id="unknown option"),
    pytest.param("origin_headers.nope =\n    A: b", "origin_headers: 'nope' is not a configured",
                 id="headers of an unknown origin"),
])
def test_bad_option_fails_loading_and_names_it(load: Any, origin: Origin, tmp_path: Path,
                                               options: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load(pipeline(origin, tmp_path, options))


def test_environment_beats_the_ini(load: Any, origin: Origin, tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIC_MAX_BYTES", "32MiB")
    monkeypatch.setenv("FIC_ORIGIN_HEADERS_T", "Authorization: Bearer from-env")
    fic = load(pipeline(origin, tmp_path, "max_bytes = 64MiB\norigin_headers.t = "
                                          "Authorization: Bearer from-ini"))
    assert fic.config.max_bytes == 32 << 20
    assert fic.config.origin_headers == {"t": {"Authorization": "Bearer from-env"}}


def test_factory_ignores_global_conf(origin: Origin, tmp_path: Path) -> None:
    fic = filter_app_factory(downstream, {"here": "/elsewhere", "max_bytes": "nonsense"},
                             cache_dir=str(tmp_path / "cache"), origins=f"t={origin.base}")
    try:
        assert fic.app is downstream and fic.config.max_bytes == 1 << 30
    finally:
        fic.close()


def test_example_ini_loads(origin: Origin, tmp_path: Path,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in example_env(origin, tmp_path).items():
        monkeypatch.setenv(name, value)
    fic = loadapp(f"config:{EXAMPLE}")
    try:
        client = webtest.TestApp(fic)
        src = client.get("/").html.find("img")["src"]
        assert src.startswith("/_fic/o/demo/")
        assert client.get(src).body == png(src.rsplit("/", 1)[1])
        assert fic.config.allowed_networks[0].with_prefixlen == "127.0.0.1/32"  # from the ini
    finally:
        fic.close()


@pytest.mark.slow
def test_example_under_gunicorn_paste(origin: Origin, tmp_path: Path) -> None:
    with gunicorn(str(EXAMPLE.relative_to(ROOT)), example_env(origin, tmp_path),
                  ["--paste"]) as base:
        status, _, page = get(f"{base}/")
        assert status == 200 and b'src="/_fic/o/demo/dusk.png"' in page
        for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
            status, headers, body = get(f"{base}/_fic/o/demo/dusk.png")
            assert (status, headers["Cache-Status"], body) == (200, cache_status, png("dusk.png"))


@pytest.mark.slow
def test_example_under_pserve(origin: Origin, tmp_path: Path) -> None:
    """``PYTHONPATH=. pserve examples/paste.ini``, on a free port: a wrapper ini takes the
    example's pipeline and names its own server."""
    port = free_port()
    ini = tmp_path / "serve.ini"
    ini.write_text(f"[app:main]\nuse = config:{EXAMPLE}\n\n"
                   f"[server:main]\nuse = egg:waitress#main\nlisten = 127.0.0.1:{port}\n")
    env = {**example_env(origin, tmp_path), "PYTHONPATH": str(ROOT)}
    pserve = [str(Path(sys.executable).parent / "pserve"), str(ini)]
    with running(pserve, f"http://127.0.0.1:{port}", env) as base:
        for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
            status, headers, body = get(f"{base}/_fic/o/demo/citrus.png")
            assert (status, headers["Cache-Status"], body) == (200, cache_status, png("citrus.png"))
