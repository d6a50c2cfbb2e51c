"""Signed remote URLs: only what a key holder signed is fetched, and only where allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import webtest

from fic_middleware import sign_url
from fic_middleware.config import Config
from fic_middleware.signing import b64decode, b64encode, signature, verify

from .conftest import Origin
from .images import png

KEY = "test-signing-key-0123456789"
OLD_KEY = "previous-signing-key-abcdef"


@pytest.fixture
def remote(make_mw: Any) -> webtest.TestApp:
    return webtest.TestApp(make_mw(signing_key=KEY))


def test_sign_url_shape() -> None:
    path = sign_url("https://example.com/cat.png", KEY)
    prefix, mode, sig, encoded = path.rsplit("/", 3)
    assert (prefix, mode) == ("/_fic", "r")
    assert b64decode(encoded) == b"https://example.com/cat.png"
    assert b64decode(sig) == signature(b"https://example.com/cat.png", KEY)
    assert "=" not in path
    assert sign_url("https://example.com/a", KEY, prefix="/img/").startswith("/img/r/")


def test_signed_url_is_fetched_and_cached(remote: webtest.TestApp, origin: Origin) -> None:
    path = sign_url(f"{origin.base}/img/remote.png", KEY)
    assert remote.get(path).body == png("remote.png")
    assert remote.get(path).headers["Cache-Status"] == "fic; hit"
    assert origin.hits["/img/remote.png"] == 1


def test_signed_url_keeps_its_own_query(remote: webtest.TestApp, origin: Origin) -> None:
    remote.get(sign_url(f"{origin.base}/img/rq.png?v=2", KEY) + "?ignored=1")
    assert origin.seen[0].query_string == b"v=2"


def test_mapped_and_remote_name_one_entry(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(signing_key=KEY))
    client.get("/_fic/o/t/img/same.png")
    response = client.get(sign_url(f"{origin.base}/img/same.png", KEY))
    assert response.headers["Cache-Status"] == "fic; hit"


def test_remote_mode_is_off_without_a_key(client: webtest.TestApp, origin: Origin) -> None:
    client.get(sign_url(f"{origin.base}/img/a.png", KEY), status=404)
    assert not origin.hits


def forged(url: str, sig_url: str | None = None, key: str = KEY) -> str:
    """A path whose signature is over ``sig_url`` (or ``url``) but that names ``url``."""
    sig = signature((sig_url or url).encode(), key)
    return f"/_fic/r/{b64encode(sig)}/{b64encode(url.encode())}"


@pytest.mark.parametrize("make_path", [
    pytest.param(lambda base: forged(f"{base}/img/a.png", key="attacker-key-0000000000"),
                 id="signed with another key"),
    pytest.param(lambda base: forged(f"{base}/img/b.png", sig_url=f"{base}/img/a.png"),
                 id="signature of another URL (replay)"),
    pytest.param(lambda base: forged(f"{base}/img/a.png").replace("/r/", "/r/A", 1),
                 id="signature with a byte too many"),
    pytest.param(lambda base: "/_fic/r/" + b64encode(b"\0" * 32) + "/"
                 + b64encode(f"{base}/img/a.png".encode()), id="zero signature"),
    pytest.param(lambda base: "/_fic/r/" + b64encode(signature(f"{base}/img/a.png".encode(), KEY)[:16])
                 + "/" + b64encode(f"{base}/img/a.png".encode()), id="truncated signature"),
])
def test_bad_signatures_get_403(remote: webtest.TestApp, origin: Origin, make_path: Any) -> None:
    assert remote.get(make_path(origin.base), status=403).text == "bad signature\n"
    assert not origin.hits


@pytest.mark.parametrize("path", [
    pytest.param("/_fic/r/", id="nothing"),
    pytest.param("/_fic/r/abc", id="no URL part"),
    pytest.param("/_fic/r/abc/", id="empty URL part"),
    pytest.param("/_fic/r//aHR0cDovL2E", id="empty signature"),
    pytest.param("/_fic/r/abc/aHR0cDovL2E/extra", id="extra segment"),
    pytest.param("/_fic/r/ab+c/aHR0cDovL2E", id="standard base64 alphabet"),
    pytest.param("/_fic/r/abc=/aHR0cDovL2E", id="padding"),
    pytest.param("/_fic/r/a/aHR0cDovL2E", id="impossible base64 length"),
    pytest.param("/_fic/r/abc/" + "QUFB" * 1400, id="URL over 4 KiB"),
])
def test_malformed_signed_paths_get_400(remote: webtest.TestApp, path: str) -> None:
    remote.get(path, status=400)


@pytest.mark.parametrize("url, status", [
    pytest.param("ftp://127.0.0.1/a.png", 403, id="ftp"),
    pytest.param("file:///etc/passwd", 403, id="file"),
    pytest.param("javascript:alert(1)", 403, id="javascript"),
    pytest.param("gopher://127.0.0.1:6379/_FLUSHALL", 403, id="gopher"),
    pytest.param("//127.0.0.1/a.png", 400, id="scheme-relative"),
    pytest.param("/img/a.png", 400, id="relative"),
    pytest.param("http://user@127.0.0.1/a.png", 400, id="userinfo"),
    pytest.param("http://example.com@127.0.0.1/a.png", 400, id="userinfo host trick"),
    pytest.param("http://127.0.0.1\\@example.com/a.png", 400, id="backslash trick"),
    pytest.param("http://%31%32%37.0.0.1/a.png", 400, id="percent-encoded host"),
    pytest.param("http://127.0.0.1:99999/a.png", 400, id="bad port"),
    pytest.param("http:///a.png", 400, id="no host"),
])
def test_signed_urls_that_are_not_http_targets(remote: webtest.TestApp, origin: Origin,
                                               url: str, status: int) -> None:
    remote.get(sign_url(url, KEY), status=status)
    assert not origin.hits


def test_signed_non_utf8_url_gets_400(remote: webtest.TestApp) -> None:
    raw = b"http://example.com/\xff"
    remote.get(f"/_fic/r/{b64encode(signature(raw, KEY))}/{b64encode(raw)}", status=400)


def test_key_rotation(make_mw: Any, origin: Origin) -> None:
    client = webtest.TestApp(make_mw(signing_keys=[KEY, OLD_KEY]))
    client.get(sign_url(f"{origin.base}/img/new.png", KEY), status=200)
    client.get(sign_url(f"{origin.base}/img/old.png", OLD_KEY), status=200)
    client.get(sign_url(f"{origin.base}/img/x.png", "never-configured-key-000"), status=403)


def test_signing_key_signs_first_then_keys_verify() -> None:
    config = Config.load(environ={}, backend="memory", signing_key=KEY, signing_keys=OLD_KEY)
    assert config.verify_keys == (KEY, OLD_KEY)


def test_signing_key_file(make_mw: Any, origin: Origin, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    keys.write_text(f"{KEY}\n\n{OLD_KEY}\n")
    client = webtest.TestApp(make_mw(signing_key_file=str(keys)))
    client.get(sign_url(f"{origin.base}/img/f.png", OLD_KEY), status=200)


def test_signing_keys_from_the_environment() -> None:
    config = Config.load(environ={"FIC_SIGNING_KEY": KEY, "FIC_BACKEND": "memory"})
    assert config.verify_keys == (KEY,)


def test_signing_keys_are_masked() -> None:
    config = Config.load(environ={}, backend="memory", signing_key=KEY, signing_keys=[OLD_KEY])
    assert KEY not in repr(config) and OLD_KEY not in repr(config)
    assert "signing_key='***'" in repr(config)


def test_missing_signing_key_file_fails_at_start(tmp_path: Path) -> None:
    from fic_middleware import ConfigError
    with pytest.raises(ConfigError, match="^signing_key_file: cannot read"):
        Config.load(environ={}, backend="memory", signing_key_file=str(tmp_path / "none"))


def test_verify_is_true_only_for_a_configured_key() -> None:
    sig = signature(b"u", KEY)
    assert verify(b"u", sig, [OLD_KEY, KEY])
    assert not verify(b"u", sig, [OLD_KEY])
    assert not verify(b"v", sig, [KEY])


@pytest.mark.parametrize("data", [b"", b"a", b"ab", b"abc", b"\xff\xfe\xfd\xfc", bytes(range(256))])
def test_b64_round_trip(data: bytes) -> None:
    text = b64encode(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64decode(text) == data


@pytest.mark.parametrize("text", ["a", "ab=", "a+b/", "a b", "abcde"])
def test_b64_refuses_other_spellings(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode(text)


# --- allowed_hosts -------------------------------------------------------------------------

@pytest.mark.parametrize("patterns, host, allowed", [
    pytest.param(["localhost"], "localhost", True, id="exact"),
    pytest.param(["LocalHost"], "localhost", True, id="case-insensitive"),
    pytest.param(["*.localhost"], "img.localhost", True, id="wildcard"),
    pytest.param(["*.localhost"], "a.b.localhost", True, id="wildcard deep"),
    pytest.param(["*.localhost"], "localhost", False, id="wildcard excludes the bare name"),
    pytest.param(["*.calhost"], "localhost", False, id="label boundary"),
    pytest.param(["calhost"], "localhost", False, id="suffix is not a match"),
    pytest.param(["localhost.evil"], "localhost", False, id="prefix is not a match"),
    pytest.param(["127.0.0.1"], "127.0.0.1", True, id="IP literal"),
])
def test_allowed_hosts(make_mw: Any, origin: Origin, patterns: list[str], host: str,
                       allowed: bool) -> None:
    client = webtest.TestApp(make_mw(signing_key=KEY, allowed_hosts=patterns,
                                     allowed_networks=["127.0.0.0/8", "::1/128"]))
    url = f"http://{host}:{origin.port}/img/h.png"
    response = client.get(sign_url(url, KEY), expect_errors=True)
    if allowed:
        # Names under .localhost don't resolve here: what matters is they got past the check.
        assert response.status_int != 403
    else:
        assert (response.status_int, response.text) == (403, "host not allowed\n")


def test_homograph_host_is_not_the_ascii_name(make_mw: Any) -> None:
    client = webtest.TestApp(make_mw(signing_key=KEY, allowed_hosts=["example.com"]))
    client.get(sign_url("http://ex\u0430mple.com/a.png", KEY), status=403)  # Cyrillic a


def test_bad_allowed_hosts_pattern() -> None:
    from fic_middleware import ConfigError
    with pytest.raises(ConfigError, match="^allowed_hosts:"):
        Config.load(environ={}, backend="memory", allowed_hosts=["*.*.example.com"])
