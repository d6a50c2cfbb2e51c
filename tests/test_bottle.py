"""Bottle: the example app, a Bottle app wrapped in FastImageCache, in process and under
gunicorn, against the real origin."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bottle
import pytest
import webtest

from fic_middleware import ConfigError, FastImageCache

from .conftest import Origin
from .images import png
from .servers import ROOT, get, gunicorn

EXAMPLE = ROOT / "examples" / "bottle_app.py"


def example_env(origin: Origin, tmp_path: Path) -> dict[str, str]:
    return {"FIC_CACHE_DIR": str(tmp_path / "cache"), "FIC_ORIGINS": f"demo={origin.base}/img",
            "FIC_ALLOWED_NETWORKS": "127.0.0.1/32"}


@pytest.fixture
def example(origin: Origin, tmp_path: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The example module's globals, configured from the environment as its docstring says."""
    for name, value in example_env(origin, tmp_path).items():
        monkeypatch.setenv(name, value)
    module = runpy.run_path(str(EXAMPLE))
    yield module
    module["app"].close()


def test_example_wraps_the_bottle_app(example: dict[str, Any]) -> None:
    app = example["app"]
    assert isinstance(app, FastImageCache) and isinstance(app.app, bottle.Bottle)


def test_example_page_and_images(example: dict[str, Any], origin: Origin) -> None:
    client = webtest.TestApp(example["app"])
    srcs = [img["src"] for img in client.get("/").html.find_all("img")]
    assert srcs == [f"/_fic/o/demo/{name}.png" for name in example["IMAGE_NAMES"]]
    for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
        response = client.get(srcs[0])
        assert (response.headers["Cache-Status"], response.body) == \
            (cache_status, png(srcs[0].rsplit("/", 1)[1]))
    assert sum(origin.hits.values()) == 1
    client.get("/elsewhere", status=404)  # Bottle's own not-found


def test_bad_option_fails_at_import_and_names_it(origin: Origin, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in example_env(origin, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("FIC_MAX_IMAGE_BYTES", "huge")
    with pytest.raises(ConfigError, match="max_image_bytes: expected a size"):
        runpy.run_path(str(EXAMPLE))


@pytest.mark.slow
def test_example_under_gunicorn(origin: Origin, tmp_path: Path) -> None:
    with gunicorn("examples.bottle_app:app", example_env(origin, tmp_path),
                  ["--workers", "2"]) as base:
        status, _, page = get(f"{base}/")
        assert status == 200 and b'src="/_fic/o/demo/slate.png"' in page
        for cache_status in ("fic; fwd=miss; stored", "fic; hit"):
            status, headers, body = get(f"{base}/_fic/o/demo/slate.png")
            assert (status, headers["Cache-Status"], body) == (200, cache_status, png("slate.png"))
