"""Pyramid: ``config.include("fic_middleware.pyramid")`` with ``fic.*`` settings, and
``request.fic_url``, through WebTest against the real origin."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import webtest
from paste.deploy import loadapp
from pyramid.config import Configurator
from pyramid.events import NewRequest
from pyramid.request import Request
from pyramid.response import Response
from pyramid.router import default_execution_policy

from fic_middleware import ConfigError, FastImageCache, sign_url

from .conftest import Origin
from .images import png


def fic_url_view(request: Request) -> Response:
    return Response(request.fic_url(request.params["t"], request.params.get("o")))


def make_pyramid_app(settings: dict[str, Any],
                     setup: Callable[[Configurator], None] = lambda config: None) -> Any:
    """The app a user writes: settings, the include, a view, make_wsgi_app()."""
    with Configurator(settings=settings) as config:
        config.include("fic_middleware.pyramid")
        config.add_route("url", "/url")
        config.add_view(fic_url_view, route_name="url")
        setup(config)
        return config.make_wsgi_app()


def main(global_config: dict[str, str], **settings: str) -> Any:
    """A paste ``app_factory`` as a Pyramid project has one (``includes`` from settings)."""
    with Configurator(settings=settings) as config:
        config.add_route("url", "/url")
        config.add_view(fic_url_view, route_name="url")
        return config.make_wsgi_app()


@pytest.fixture
def settings(tmp_path: Path, origin: Origin) -> dict[str, Any]:
    return {"fic.cache_dir": str(tmp_path / "cache"), "fic.origins": f"t={origin.base}",
            "fic.allowed_networks": "127.0.0.1/32"}


@pytest.fixture
def make_app(settings: dict[str, Any]) -> Iterator[Callable[..., webtest.TestApp]]:
    made: list[Any] = []

    def make(setup: Callable[[Configurator], None] = lambda config: None,
             **more: Any) -> webtest.TestApp:
        app = make_pyramid_app({**settings, **more}, setup)
        made.append(app)
        return webtest.TestApp(app)

    yield make
    for app in made:
        app.registry["fic_middleware"].close()


def test_images_are_served_and_the_rest_reaches_pyramid(make_app: Any, origin: Origin) -> None:
    client = make_app()
    for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
        response = client.get("/_fic/o/t/img/p.png")
        assert (response.headers["Cache-Status"], response.body) == (cache_status, png("p.png"))
    assert origin.hits["/img/p.png"] == 1
    assert client.get("/url", {"t": "a.png", "o": "t"}).text == "/_fic/o/t/a.png"
    client.get("/elsewhere", status=404)  # Pyramid's own not-found


def test_image_requests_make_no_pyramid_request(make_app: Any) -> None:
    seen: list[str] = []

    def setup(config: Configurator) -> None:
        config.add_subscriber(lambda event: seen.append(event.request.path), NewRequest)

    client = make_app(setup)
    client.get("/_fic/o/t/img/q.png")
    client.get("/url", {"t": "a.png", "o": "t"})
    assert seen == ["/url"]


def test_middleware_is_in_the_registry(make_app: Any) -> None:
    client = make_app()
    assert isinstance(client.app.registry["fic_middleware"], FastImageCache)


def test_request_fic_url_signed(make_app: Any, origin: Origin) -> None:
    client = make_app(**{"fic.origins": "", "fic.signing_key": "pyramid-key"})
    url = f"{origin.base}/img/s.png"
    src = client.get("/url", {"t": url}).text
    assert src == sign_url(url, "pyramid-key")
    assert client.get(src).body == png("s.png")


def test_request_fic_url_includes_script_name(make_app: Any) -> None:
    client = make_app()
    client.extra_environ["SCRIPT_NAME"] = "/site"
    assert client.get("/url", {"t": "t/a.png"}).text == "/site/_fic/o/t/a.png"


def test_request_fic_url_that_cannot_be_built_raises(make_app: Any) -> None:
    client = make_app()
    with pytest.raises(ValueError, match="no origin named 'nope'"):
        client.get("/url", {"t": "a.png", "o": "nope"})


def test_origin_headers_setting(make_app: Any, origin: Origin) -> None:
    client = make_app(**{"fic.origin_headers.t": "\nAuthorization: Bearer pyr\nX-Tenant: p"})
    client.get("/_fic/o/t/img/h.png")
    sent = origin.seen[-1].headers
    assert (sent["Authorization"], sent["X-Tenant"]) == ("Bearer pyr", "p")


def test_environment_beats_settings(make_app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FIC_MAX_BYTES", "16MiB")
    client = make_app(**{"fic.max_bytes": "64MiB"})
    assert client.app.registry["fic_middleware"].config.max_bytes == 16 << 20


@pytest.mark.parametrize(("more", "message"), [
    pytest.param({"fic.max_bytes": "lots"}, "max_bytes: expected a size", id="bad size"),
    pytest.param({"fic.prefix": "no-slash"}, "prefix: expected a URL path", id="bad prefix"),
    pytest.param({"fic.cache_dirr": "/tmp"}, "cache_dirr: unknown option", id="unknown"),
])
def test_bad_setting_fails_the_include_and_names_it(settings: dict[str, Any],
                                                    more: dict[str, str], message: str) -> None:
    config = Configurator(settings={**settings, **more})
    with pytest.raises(ConfigError, match=message):
        config.include("fic_middleware.pyramid")


def tagging_policy(environ: dict[str, Any], router: Any) -> Any:
    """Another execution policy (as pyramid_retry sets one): tags Pyramid's responses."""
    response = default_execution_policy(environ, router)
    response.headers["X-Policy"] = "tagging"
    return response


@pytest.mark.parametrize("before", [pytest.param(True, id="set before the include"),
                                    pytest.param(False, id="set after the include")])
def test_another_execution_policy_still_runs(settings: dict[str, Any], before: bool) -> None:
    with Configurator(settings=settings) as config:
        if before:
            config.set_execution_policy(tagging_policy)
        config.include("fic_middleware.pyramid")
        if not before:
            config.set_execution_policy(tagging_policy)
        config.add_route("url", "/url")
        config.add_view(fic_url_view, route_name="url")
        app = config.make_wsgi_app()
    try:
        client = webtest.TestApp(app)
        assert client.get("/url", {"t": "t/a.png"}).headers["X-Policy"] == "tagging"
        assert "X-Policy" not in client.get("/_fic/o/t/img/e.png").headers
    finally:
        app.registry["fic_middleware"].close()


def test_paste_ini_with_pyramid_includes(tmp_path: Path, origin: Origin) -> None:
    """The way a Pyramid project is deployed: pserve/gunicorn load [app:main] with settings."""
    ini = tmp_path / "production.ini"
    ini.write_text(f"""\
[app:main]
use = call:tests.test_pyramid:main
pyramid.includes = fic_middleware.pyramid
fic.cache_dir = {tmp_path / "cache"}
fic.origins =
    t={origin.base}
fic.origin_headers.t =
    Authorization: Bearer from-ini
fic.allowed_networks = 127.0.0.1/32
""")
    app = loadapp(f"config:{ini}")
    try:
        client = webtest.TestApp(app)
        assert client.get("/url", {"t": "img/i.png", "o": "t"}).text == "/_fic/o/t/img/i.png"
        assert client.get("/_fic/o/t/img/i.png").body == png("i.png")
        assert origin.seen[-1].headers["Authorization"] == "Bearer from-ini"
    finally:
        app.registry["fic_middleware"].close()
