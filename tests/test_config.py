"""Options: parsing, precedence, files, environment, errors that name the option."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest

from fic_middleware import ConfigError, FastImageCache
from fic_middleware.config import OPTIONS, Config, file_options

from .conftest import downstream

MEM = {"backend": "memory"}


def load(environ: dict[str, str] | None = None, **kwargs: Any) -> Config:
    return Config.load(environ=environ or {}, **kwargs)


def test_defaults() -> None:
    config = load(**MEM)
    assert config.prefix == "/_fic"
    assert config.max_image_bytes == 10 * 1024 * 1024
    assert config.max_bytes == 1024**3
    assert (config.connect_timeout, config.read_timeout, config.total_timeout) == (3, 10, 20)
    assert (config.min_ttl, config.default_ttl, config.max_ttl) == (60, 86400, 30 * 86400)
    assert config.retries == 2 and config.max_redirects == 3
    assert config.verify_tls is True and config.forward_query is False
    assert "image/svg+xml" not in config.allowed_types
    assert (config.client_ipv4_prefix, config.client_ipv6_prefix) == (32, 64)


def test_config_fields_match_the_option_table() -> None:
    assert [o.name for o in OPTIONS] == list(Config.__dataclass_fields__)


@pytest.mark.parametrize("text, expected", [
    ("10MiB", 10 * 1024**2), ("10 MiB", 10 * 1024**2), ("1GiB", 1024**3), ("512KiB", 512 * 1024),
    ("2MB", 2_000_000), ("1k", 1024), ("4096", 4096), (4096, 4096), ("1.5MiB", 1572864),
])
def test_sizes(text: Any, expected: int) -> None:
    assert load(max_image_bytes=text, **MEM).max_image_bytes == expected


@pytest.mark.parametrize("text, expected", [
    ("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1w", 604800), ("250ms", 0.25),
    ("12", 12), (7, 7), (0.5, 0.5),
])
def test_durations(text: Any, expected: float) -> None:
    assert load(read_timeout=text, **MEM).read_timeout == expected


@pytest.mark.parametrize("option, value, words", [
    pytest.param("max_image_bytes", True, "expected a size", id="bool as size"),
    pytest.param("max_image_bytes", "10 parsecs", "expected a size", id="unknown unit"),
    pytest.param("max_image_bytes", -1, "expected a size", id="negative size"),
    pytest.param("max_image_bytes", 0, "at least 1 byte", id="zero size"),
    pytest.param("read_timeout", "soon", "expected a duration", id="bad duration"),
    pytest.param("read_timeout", False, "expected a duration", id="bool as duration"),
    pytest.param("connect_timeout", 0, "more than 0", id="zero timeout"),
    pytest.param("retries", "two", "whole number", id="retries not a number"),
    pytest.param("retries", True, "whole number", id="bool as count"),
    pytest.param("retries", -1, "whole number", id="negative retries"),
    pytest.param("forward_query", "maybe", "true or false", id="bad bool"),
    pytest.param("prefix", "images", "URL path", id="prefix not a path"),
    pytest.param("prefix", "/", "URL path", id="prefix root"),
    pytest.param("prefix", "/a b", "URL path", id="prefix with space"),
    pytest.param("prefix", "/a?b", "URL path", id="prefix with query"),
    pytest.param("backend", "sqlite", "'lmdb' or 'memory'", id="unknown backend"),
    pytest.param("origins", {"cdn": "ftp://x/y"}, "absolute http(s) URL", id="ftp origin"),
    pytest.param("origins", {"cdn": "/relative"}, "absolute http(s) URL", id="relative origin"),
    pytest.param("origins", {"cdn": "https://user:pw@x/y"}, "absolute http(s) URL", id="userinfo"),
    pytest.param("origins", {"cdn": "https://x/y?q=1"}, "query", id="origin with query"),
    pytest.param("origins", {"CDN": "https://x"}, "[a-z0-9_-]+", id="upper-case origin name"),
    pytest.param("origins", {"a/b": "https://x"}, "[a-z0-9_-]+", id="slash in origin name"),
    pytest.param("origins", "cdn", "name=url", id="origins string without ="),
    pytest.param("origins", ["https://x"], "mapping", id="origins list"),
    pytest.param("allowed_types", "image/tiff", "unsupported image type", id="unknown type"),
    pytest.param("client_ipv4_prefix", 33, "prefix length from 0 to 32", id="IPv4 prefix over 32"),
    pytest.param("client_ipv4_prefix", -1, "prefix length from 0 to 32", id="negative IPv4 prefix"),
    pytest.param("client_ipv4_prefix", True, "prefix length from 0 to 32", id="bool as prefix"),
    pytest.param("client_ipv6_prefix", "129", "prefix length from 0 to 128",
                 id="IPv6 prefix over 128"),
    pytest.param("client_ipv6_prefix", "/64", "prefix length from 0 to 128",
                 id="IPv6 prefix with slash"),
    pytest.param("allowed_networks", "10.0.0.0/33", "allowed_networks", id="bad CIDR"),
    pytest.param("ca_bundle", "/no/such/file.pem", "no such file", id="missing CA bundle"),
    pytest.param("min_ttl", "60d", "max_ttl", id="min_ttl above max_ttl"),
    pytest.param("max_bytes", "1KiB", "max_image_bytes", id="budget below one image"),
])
def test_bad_values_name_the_option(option: str, value: Any, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(**{**MEM, option: value})
    assert str(info.value).startswith(option)
    assert words in str(info.value)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


def test_unknown_option() -> None:
    with pytest.raises(ConfigError, match="^max_byte: unknown option"):
        load(max_byte=1, **MEM)


def test_origin_headers_for_unknown_origin() -> None:
    with pytest.raises(ConfigError, match="^origin_headers: 'cdn' is not a configured origin"):
        load(origin_headers={"cdn": {"Authorization": "x"}}, **MEM)


@pytest.mark.parametrize("headers, words", [
    ({"Bad Header": "x"}, "not a valid header name"),
    ({"X-Evil": "a\r\nInjected: 1"}, "one line"),
])
def test_bad_origin_headers(headers: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=f"^origin_headers.cdn: .*{words}"):
        load(origins={"cdn": "https://x"}, origin_headers={"cdn": headers}, **MEM)


def test_origin_urls_are_canonical() -> None:
    config = load(origins={"a": "HTTPS://Images.Example.COM:443/media/", "b": "http://x:8080"}, **MEM)
    assert config.origins == {"a": "https://images.example.com/media", "b": "http://x:8080"}


def test_lists_from_strings() -> None:
    config = load(allowed_networks="127.0.0.1/32, ::1/128\n10.0.0.0/8",
                  allowed_types="image/png image/JPG", **MEM)
    assert config.allowed_networks == (ipaddress.ip_network("127.0.0.1/32"),
                                       ipaddress.ip_network("::1/128"),
                                       ipaddress.ip_network("10.0.0.0/8"))
    assert config.allowed_types == {"image/png", "image/jpeg"}


def test_lmdb_needs_a_cache_dir() -> None:
    with pytest.raises(ConfigError, match="^cache_dir: required"):
        load()


def test_cache_dir_is_created(tmp_path: Path) -> None:
    load(cache_dir=str(tmp_path / "a" / "b"))
    assert (tmp_path / "a" / "b").is_dir()


def test_cache_dir_that_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="^cache_dir: cannot create"):
        load(cache_dir=str(tmp_path / "file" / "cache"))


def test_secrets_are_masked_in_repr() -> None:
    config = load(origins={"cdn": "https://x"},
                  origin_headers={"cdn": {"Authorization": "Bearer hunter2"}}, **MEM)
    assert "hunter2" not in repr(config)
    assert "'Authorization': '***'" in repr(config)
    assert config.origin_headers["cdn"]["Authorization"] == "Bearer hunter2"


def test_config_error_does_not_echo_header_values() -> None:
    with pytest.raises(ConfigError) as info:
        load(origins={"cdn": "https://x"}, origin_headers={"cdn": "no colon hunter2"}, **MEM)
    assert "hunter2" not in str(info.value)


CREDENTIALS = "https://ann:s3cr%2Ft@img.example.com/media"


@pytest.mark.parametrize("environ, options, shown", [
    pytest.param({}, {"origins": {"cdn": CREDENTIALS}}, "https://***@img.example.com/media",
                 id="origin URL"),
    pytest.param({}, {"origins": f"cdn={CREDENTIALS}"}, "https://***@img.example.com/media",
                 id="origins string"),
    pytest.param({"FIC_ORIGINS": f"cdn={CREDENTIALS}"}, {}, "https://***@img.example.com/media",
                 id="origins from the environment"),
    pytest.param({}, {"origins": {"cdn": "https://ann:s3/cr@t@img.example.com/"}},
                 "https://***@img.example.com/", id="'/' and '@' in the password"),
    pytest.param({}, {"origins": CREDENTIALS}, "https://***@img.example.com/media",
                 id="origins string without a name"),
    pytest.param({}, {"origins": [CREDENTIALS]}, "https://***@img.example.com/media",
                 id="origins list"),
    pytest.param({}, {"allowed_hosts": CREDENTIALS}, "https://***@img.example.com/media",
                 id="allowed_hosts"),
    pytest.param({}, {"allowed_networks": CREDENTIALS}, "https://***@img.example.com/media",
                 id="allowed_networks"),
])
def test_config_errors_do_not_echo_url_credentials(environ: dict[str, str], options: dict[str, Any],
                                                    shown: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(environ, **{**MEM, **options})
    message = str(info.value)
    assert shown in message
    assert "ann" not in message and "s3" not in message and "cr@t" not in message


def test_config_file_errors_do_not_echo_url_credentials(tmp_path: Path) -> None:
    path = tmp_path / "fic.ini"
    path.write_text(f"[fic]\nbackend = memory\n= {CREDENTIALS}\n")  # a value without a key
    with pytest.raises(ConfigError, match="^config_file: .* not a valid INI") as info:
        load(config_file=str(path))
    assert "https://***@img.example.com/media" in str(info.value)
    assert "s3cr" not in str(info.value)


def test_config_is_immutable() -> None:
    config = load(**MEM)
    with pytest.raises(AttributeError):
        config.prefix = "/x"  # type: ignore[misc]


# --- environment ---------------------------------------------------------------------------

def test_environment_variables() -> None:
    config = load({"FIC_BACKEND": "memory", "FIC_MAX_IMAGE_BYTES": "2MiB",
                   "FIC_ORIGINS": "cdn=https://a/img,static=https://b",
                   "FIC_ORIGIN_HEADERS_CDN": "Authorization: Bearer e",
                   "FIC_FORWARD_QUERY": "yes", "FIC_ALLOWED_NETWORKS": "127.0.0.1/32"})
    assert config.max_image_bytes == 2 * 1024**2
    assert config.origins == {"cdn": "https://a/img", "static": "https://b"}
    assert config.origin_headers == {"cdn": {"Authorization": "Bearer e"}}
    assert config.forward_query is True


def test_env_origin_headers_for_a_dashed_origin_name() -> None:
    config = load({"FIC_ORIGINS": "my-cdn=https://a", "FIC_ORIGIN_HEADERS_MY_CDN": "X-Key: k"}, **MEM)
    assert config.origin_headers == {"my-cdn": {"X-Key": "k"}}


# What Kubernetes sets in every pod of a namespace that has a Service named "fic".
KUBERNETES_SERVICE_ENV = {
    "FIC_PORT": "tcp://10.0.0.11:80", "FIC_SERVICE_HOST": "10.0.0.11", "FIC_SERVICE_PORT": "80",
    "FIC_PORT_80_TCP": "tcp://10.0.0.11:80", "FIC_PORT_80_TCP_ADDR": "10.0.0.11",
    "FIC_PORT_80_TCP_PORT": "80", "FIC_PORT_80_TCP_PROTO": "tcp",
}


def test_kubernetes_service_variables_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    config = load({**KUBERNETES_SERVICE_ENV, "FIC_MAX_IMAGE_BYTES": "2MiB"}, **MEM)
    assert config == load(max_image_bytes="2MiB", **MEM)
    warned = [r.getMessage() for r in caplog.records if r.name == "fic_middleware"]
    assert len(warned) == len(KUBERNETES_SERVICE_ENV)
    for name in KUBERNETES_SERVICE_ENV:
        assert sum(m.startswith(f"ignoring {name}:") for m in warned) == 1


def test_unknown_environment_variable_warns_once_with_the_closest_option(
        caplog: pytest.LogCaptureFixture) -> None:
    assert load({"FIC_MAX_BYTE": "1"}, **MEM).max_bytes == 1024**3
    (record,) = [r for r in caplog.records if r.name == "fic_middleware"]
    assert record.levelname == "WARNING"
    assert record.getMessage() == ("ignoring FIC_MAX_BYTE: not an option "
                                   "(did you mean FIC_MAX_BYTES?)")


def test_origin_headers_without_an_origin_in_the_environment() -> None:
    with pytest.raises(ConfigError, match="^FIC_ORIGIN_HEADERS: set one origin's headers"):
        load({"FIC_ORIGIN_HEADERS": "X-Key: k"}, **MEM)


def test_unknown_environment_variable_does_not_hide_a_file_key() -> None:
    """file_options leaves out what the environment sets; FIC_PORT sets no option, so a
    ``port`` key of the file stays an unknown option."""
    environ = {"FIC_PORT": "tcp://10.0.0.11:80"}
    options = file_options({"backend": "memory", "port": "80"}, environ)
    assert options == {"backend": "memory", "port": "80"}
    with pytest.raises(ConfigError, match="^port: unknown option"):
        load(environ, **options)


def test_bad_environment_value_names_the_option() -> None:
    with pytest.raises(ConfigError, match="^read_timeout:"):
        load({"FIC_READ_TIMEOUT": "forever"}, **MEM)


def test_keywords_beat_environment() -> None:
    config = load({"FIC_READ_TIMEOUT": "5s"}, read_timeout="7s", **MEM)
    assert config.read_timeout == 7


def test_middleware_reads_os_environ(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("FIC_CACHE_DIR", str(tmp_path / "envcache"))
    monkeypatch.setenv("FIC_PREFIX", "/img")
    mw = FastImageCache(downstream)
    assert mw.config.prefix == "/img" and mw.config.cache_dir == str(tmp_path / "envcache")
    mw.close()


def test_bad_option_fails_at_construction() -> None:
    with pytest.raises(ConfigError, match="^prefix"):
        FastImageCache(downstream, backend="memory", prefix="nope")


# --- files ---------------------------------------------------------------------------------

INI = """
[fic]
backend = memory
max_image_bytes = 3MiB
origins =
    cdn=https://images.example.com/media
    static=https://static.example.com
origin_headers.cdn =
    Authorization: Bearer from-ini
    X-Extra: 1
allowed_networks = 127.0.0.1/32, ::1/128
forward_query = true
"""

TOML = """
[fic]
backend = "memory"
max_image_bytes = "3MiB"
read_timeout = 4
origins = {cdn = "https://images.example.com/media"}
origin_headers = {cdn = {Authorization = "Bearer from-toml"}}
allowed_types = ["image/png", "image/webp"]
"""


def test_ini_file(tmp_path: Path) -> None:
    path = tmp_path / "fic.ini"
    path.write_text(INI)
    config = load(config_file=str(path))
    assert config.max_image_bytes == 3 * 1024**2
    assert config.origins == {"cdn": "https://images.example.com/media",
                              "static": "https://static.example.com"}
    assert config.origin_headers == {"cdn": {"Authorization": "Bearer from-ini", "X-Extra": "1"}}
    assert config.forward_query is True
    assert len(config.allowed_networks) == 2


def test_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "fic.toml"
    path.write_text(TOML)
    config = load(config_file=str(path))
    assert config.read_timeout == 4
    assert config.origin_headers == {"cdn": {"Authorization": "Bearer from-toml"}}
    assert config.allowed_types == {"image/png", "image/webp"}


def test_precedence_keywords_over_env_over_file(tmp_path: Path) -> None:
    path = tmp_path / "fic.toml"
    path.write_text(TOML)
    config = load({"FIC_READ_TIMEOUT": "5", "FIC_MAX_IMAGE_BYTES": "1MiB"},
                  config_file=str(path), read_timeout=6)
    assert config.read_timeout == 6  # keyword
    assert config.max_image_bytes == 1024**2  # environment over file
    assert config.origins["cdn"] == "https://images.example.com/media"  # file over default


def test_config_file_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "fic.ini"
    path.write_text(INI)
    assert load({"FIC_CONFIG_FILE": str(path)}).max_image_bytes == 3 * 1024**2


@pytest.mark.parametrize("name, text, words", [
    pytest.param("x.toml", "[fic\n", "not valid TOML", id="broken TOML"),
    pytest.param("x.toml", "[other]\na = 1\n", "no [fic] table", id="TOML without [fic]"),
    pytest.param("x.ini", "[other]\na = 1\n", "no [fic] section", id="INI without [fic]"),
    pytest.param("x.ini", "not ini at all", "not a valid INI", id="broken INI"),
    pytest.param("x.ini", "[fic]\nmax_byte = 1\n", "max_byte: unknown option", id="unknown key"),
])
def test_bad_config_files(tmp_path: Path, name: str, text: str, words: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=words.replace("[", r"\[").replace("]", r"\]")):
        load(config_file=str(path), **MEM)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="^config_file: cannot read"):
        load(config_file=str(tmp_path / "nope.ini"))


def test_bad_value_in_file_names_the_option(tmp_path: Path) -> None:
    path = tmp_path / "fic.ini"
    path.write_text("[fic]\nbackend = memory\nretries = lots\n")
    with pytest.raises(ConfigError, match="^retries:"):
        load(config_file=str(path))


def test_ini_default_section_is_not_ours(tmp_path: Path) -> None:
    """A paste file's [DEFAULT] (its global_conf) does not leak into [fic]."""
    path = tmp_path / "paste.ini"
    path.write_text("[DEFAULT]\nhere = /srv\n\n[fic]\nbackend = memory\nretries = 1\n")
    assert load(config_file=str(path)).retries == 1


def test_a_ready_config_is_taken_as_it_is() -> None:
    config = Config.load(environ={}, backend="memory", prefix="/img")
    assert FastImageCache(downstream, config).config is config


def test_a_config_and_keyword_options_together_are_refused() -> None:
    config = Config.load(environ={}, backend="memory")
    with pytest.raises(TypeError, match="not both"):
        FastImageCache(downstream, config, prefix="/img")  # type: ignore[misc]


@pytest.mark.parametrize("options, words", [
    pytest.param({"max_bytes": "1MiB", "max_image_bytes": "2MiB"}, "1048576 < 2097152",
                 id="max_bytes below max_image_bytes"),
    pytest.param({"min_ttl": "2h", "max_ttl": "1h"}, "7200s > 3600s", id="min_ttl above max_ttl"),
    pytest.param({"read_timeout": 0}, "got 0", id="zero timeout"),
])
def test_rule_errors_show_the_values(options: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        Config.load(environ={}, backend="memory", **options)
