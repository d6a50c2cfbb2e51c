"""Router: a path after the prefix -> the origin URL and the cache key (pure, no I/O)."""

from __future__ import annotations

import pytest

from fic_middleware.config import Config
from fic_middleware.errors import BadRequest, Forbidden, NotFound, RequestError
from fic_middleware.routing import Router, cache_key
from fic_middleware.signing import sign_url

KEY = "routing-test-key-0123456789"
BASE = "https://images.example.com/media"


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(Config.load(backend="memory", origins={"cdn": BASE}, signing_key=KEY,
                              environ={}))


@pytest.mark.parametrize(("path", "query", "url"), [
    pytest.param("/o/cdn/cat.jpg", "", f"{BASE}/cat.jpg", id="mapped origin"),
    pytest.param("/o/cdn/2024/a b.png", "", f"{BASE}/2024/a%20b.png", id="space is quoted"),
    pytest.param("/o/cdn/cat.jpg", "w=100", f"{BASE}/cat.jpg?w=100", id="query forwarded"),
])
def test_mapped_paths_name_the_origin_url(router: Router, path: str, query: str, url: str) -> None:
    request = router.route(path, query)
    assert (request.url, request.origin) == (url, "cdn")
    assert request.key == cache_key(url)


def test_signed_remote_path_names_its_url(router: Router) -> None:
    path = sign_url("https://example.org/dog.png", KEY, "")
    assert router.route(path).url == "https://example.org/dog.png"


@pytest.mark.parametrize(("path", "raw_uri", "error"), [
    pytest.param("/x/cdn/cat.jpg", None, NotFound, id="unknown mode"),
    pytest.param("/o/nope/cat.jpg", None, NotFound, id="unknown origin"),
    pytest.param("/o/cdn/", None, BadRequest, id="no image path"),
    pytest.param("/o/cdn/a/../b.png", None, BadRequest, id="traversal"),
    pytest.param("/o/cdn/a/b.png", "/_fic/o/cdn/a%2fb.png", BadRequest, id="encoded slash"),
    pytest.param("/r/AAAA/aHR0cHM6Ly9leGFtcGxlLm9yZy9hLnBuZw", None, Forbidden,
                 id="bad signature"),
])
def test_paths_that_name_no_image_are_refused(router: Router, path: str, raw_uri: str | None,
                                              error: type[RequestError]) -> None:
    with pytest.raises(error):
        router.route(path, "", raw_uri)


def test_purge_keys_of_a_mapped_url_include_the_remote_key(router: Router) -> None:
    assert cache_key(f"{BASE}/cat.jpg") in router.keys_for_url(f"{BASE}/cat.jpg")
