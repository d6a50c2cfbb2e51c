"""Flask: ``FastImageCache.init_app`` and the ``fic_url`` Jinja global, through
Flask's test client against the real origin."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask, render_template_string, request

from fic_middleware import ConfigError, FastImageCache, sign_url

from .conftest import Origin
from .images import png


@pytest.fixture
def make_app(tmp_path: Path, origin: Origin) -> Iterator[Any]:
    """A Flask app whose ``/render?t=...&o=...`` renders ``fic_url(t, o)`` in a template;
    ``init_app`` with the test origin as ``t``, the middlewares closed at teardown."""
    made: list[FastImageCache] = []

    def make(**options: Any) -> Flask:
        app = Flask(__name__)
        app.config["TESTING"] = True

        @app.get("/render")
        def render() -> str:
            return render_template_string("<img src=\"{{ fic_url(t, o) }}\">",
                                          t=request.args["t"], o=request.args.get("o"))

        @app.get("/page")
        def page() -> str:
            return "flask page"

        options.setdefault("cache_dir", str(tmp_path / "cache"))
        options.setdefault("origins", {"t": origin.base})
        options.setdefault("allowed_networks", ["127.0.0.1/32"])
        made.append(FastImageCache.init_app(app, **options))
        return app

    yield make
    for fic in made:
        fic.close()


def test_images_are_served_by_the_middleware(make_app: Any, origin: Origin) -> None:
    client = make_app().test_client()
    for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
        response = client.get("/_fic/o/t/img/a.png")
        assert (response.headers["Cache-Status"], response.data) == (cache_status, png("a.png"))
    assert origin.hits["/img/a.png"] == 1
    assert client.get("/page").data == b"flask page"


def test_middleware_wraps_wsgi_app_and_is_in_extensions(make_app: Any) -> None:
    app = make_app()
    fic = app.extensions["fic_middleware"]
    assert isinstance(fic, FastImageCache) and app.wsgi_app is fic


def test_fic_url_mapped_in_a_template(make_app: Any) -> None:
    client = make_app().test_client()
    html = client.get("/render", query_string={"t": "img/my cat.png", "o": "t"}).text
    assert html == '<img src="/_fic/o/t/img/my%20cat.png">'
    assert client.get("/_fic/o/t/img/my%20cat.png").data == png("my cat.png")


def test_fic_url_of_a_url_under_a_mapped_origin(make_app: Any, origin: Origin) -> None:
    client = make_app().test_client()
    html = client.get("/render", query_string={"t": f"{origin.base}/img/m.png"}).text
    assert html == '<img src="/_fic/o/t/img/m.png">'


def test_fic_url_signed_in_a_template(make_app: Any, origin: Origin) -> None:
    client = make_app(origins={}, signing_key="flask-key").test_client()
    url = f"{origin.base}/img/s.png"
    html = client.get("/render", query_string={"t": url}).text
    src = html.split('"')[1].replace("&amp;", "&")
    assert src == sign_url(url, "flask-key")
    response = client.get(src)
    assert (response.status_code, response.data) == (200, png("s.png"))


def test_fic_url_that_cannot_be_built_fails_the_render(make_app: Any) -> None:
    client = make_app().test_client()
    with pytest.raises(ValueError, match="without a signing_key"):
        client.get("/render", query_string={"t": "https://example.org/x.png"})


def test_fic_url_includes_script_name(make_app: Any) -> None:
    client = make_app().test_client()
    html = client.get("/render", query_string={"t": "img/a.png", "o": "t"},
                      environ_overrides={"SCRIPT_NAME": "/site"}).text
    assert html == '<img src="/site/_fic/o/t/img/a.png">'


def test_fic_url_outside_a_request_is_relative_to_the_app(make_app: Any) -> None:
    app = make_app()
    with app.app_context():
        assert render_template_string("{{ fic_url('t/img/a.png') }}") == "/_fic/o/t/img/a.png"


def test_options_from_app_config(tmp_path: Path, origin: Origin) -> None:
    app = Flask(__name__)
    app.config.update(FIC_CACHE_DIR=str(tmp_path / "cache"), FIC_ORIGINS=f"t={origin.base}",
                      FIC_MAX_BYTES="64MiB", FIC_ALLOWED_NETWORKS="127.0.0.1/32",
                      SECRET_KEY="not ours")
    fic = FastImageCache.init_app(app, max_bytes="32MiB")
    try:
        assert fic.config.origins == {"t": origin.base}
        assert fic.config.max_bytes == 32 << 20  # keyword arguments beat app.config
        assert app.test_client().get("/_fic/o/t/img/c.png").data == png("c.png")
    finally:
        fic.close()


def test_environment_beats_app_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIC_MAX_BYTES", "16MiB")
    app = Flask(__name__)
    app.config.update(FIC_BACKEND="memory", FIC_MAX_BYTES="64MiB")
    fic = FastImageCache.init_app(app)
    try:
        assert (fic.config.backend, fic.config.max_bytes) == ("memory", 16 << 20)
    finally:
        fic.close()


@pytest.mark.parametrize(("config", "options", "message"), [
    pytest.param({"FIC_MAX_BYTES": "lots"}, {}, "max_bytes: expected a size", id="app.config"),
    pytest.param({"FIC_CACHE_DIRR": "/tmp"}, {}, "FIC_CACHE_DIRR: unknown option in app.config",
                 id="unknown app.config key"),
    pytest.param({}, {"max_redirects": True}, "max_redirects: expected a whole number",
                 id="keyword"),
    pytest.param({}, {"cache_dirr": "/tmp"}, "cache_dirr: unknown option", id="unknown keyword"),
])
def test_bad_option_fails_init_app_and_names_it(config: dict[str, Any], options: dict[str, Any],
                                                message: str) -> None:
    app = Flask(__name__)
    app.config.update(FIC_BACKEND="memory", **config)
    with pytest.raises(ConfigError, match=message):
        FastImageCache.init_app(app, **options)
    assert "fic_middleware" not in app.extensions


def test_init_app_twice_is_refused(make_app: Any) -> None:
    app = make_app()
    with pytest.raises(RuntimeError, match="already"):
        FastImageCache.init_app(app, backend="memory")


def test_importing_the_module_does_not_import_flask() -> None:
    code = "import sys, fic_middleware.flask_ext; assert 'flask' not in sys.modules, 'flask imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
