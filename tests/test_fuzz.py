"""Property-based fuzzing (hypothesis) of the parts that take untrusted text: the WSGI
boundary and routing, URL canonicalisation and cache keys, signed URLs, HTTP header parsing,
and the option parsers (docs/RESPONSES.md, docs/CACHING.md, docs/CONFIGURATION.md).

No test here touches the network: the middlewares use ``backend="memory"`` and a stub in
place of ``Fetcher.fetch``, and a module-wide guard makes every socket connect or name
lookup fail loudly (and is checked at the end of the module).

Runtime is bounded by ``max_examples`` per test (the file runs in under 20 s). With ``CI`` set
in the environment (``CI=true``, as CI services do) every run uses the same examples
(derandomized); otherwise each run explores new ones. ``FUZZ_SCALE=10`` multiplies the example
counts for a longer local hunt. No example database is written. (The settings live here, not
in a registered profile: a profile would have to be registered in conftest.py.)

The bugs these properties found are pinned by minimal regression tests at the end of the file.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import re
import socket
import string
from collections.abc import Callable, Iterator, Mapping
from email.utils import formatdate
from typing import Any
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, example, given, note, settings
from hypothesis import strategies as st

from fic_middleware import FastImageCache, sign_url
from fic_middleware.config import OPTIONS, Config
from fic_middleware.errors import BadRequest, ConfigError, Forbidden, NotFound, OriginError, OriginTimeout, \
    RequestError
from fic_middleware.fetch import Fetched, Fetcher
from fic_middleware.freshness import Policy
from fic_middleware.responses import is_not_modified
from fic_middleware.record import Entry, strong_etag
from fic_middleware.routing import Router, cache_key
from fic_middleware.signing import b64encode
from fic_middleware.urls import canonical_url

from .images import png

# --- settings --------------------------------------------------------------------------------

_CI = os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")
# Not FIC_*: that prefix is the middleware's own (unknown FIC_ names are logged).
_SCALE = float(os.environ.get("FUZZ_SCALE", "1"))


def fuzz(max_examples: int) -> settings:
    """Per-test settings: bounded, no deadline (the machine is shared), no database file."""
    extra: dict[str, Any] = {"derandomize": True} if _CI else {}
    return settings(max_examples=max(1, int(max_examples * _SCALE)), deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow], **extra)


# --- fixtures: no network, stub fetcher ----------------------------------------------------------

PREFIX = "/_fic"
ORIGINS = {"a": "http://127.0.0.1:9/base", "b": "https://example.com"}
KEY = "fuzz-signing-key"
OTHER_KEY = "not-the-configured-key"
# The statuses of the response table (docs/RESPONSES.md); 500 is never an answer.
TABLE_STATUSES = {200, 206, 304, 400, 403, 404, 405, 416, 429, 502, 503, 504}
PNG = png("fuzz")
LAST_MODIFIED = "Wed, 21 Oct 2026 07:28:00 GMT"
_CONTROL_OR_BACKSLASH = re.compile(r"[\x00-\x20\x7f\\]")


class NetworkUsed(AssertionError):
    pass


@pytest.fixture(scope="module", autouse=True)
def no_network() -> Iterator[list[str]]:
    """Every connect and every name lookup in this module is an error, recorded."""
    attempts: list[str] = []

    def refuse(what: str) -> Callable[..., Any]:
        def refused(*args: Any, **kwargs: Any) -> Any:
            attempts.append(f"{what}{args[1:] if what.startswith('socket.') else args}")
            raise NetworkUsed(f"{what} called in a test that must not use the network")
        return refused

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse("socket.connect"))
        mp.setattr(socket.socket, "connect_ex", refuse("socket.connect_ex"))
        mp.setattr(socket, "create_connection", refuse("create_connection"))
        mp.setattr(socket, "getaddrinfo", refuse("getaddrinfo"))
        yield attempts
    assert attempts == [], attempts


class StubFetch:
    """Stands in for ``Fetcher.fetch``: canned answers, and every URL it was asked for."""

    OUTCOMES = ("png", "png-no-store", "png-no-cache", "png-304", "not-found", "origin-error",
                "timeout", "forbidden")

    def __init__(self) -> None:
        self.outcome = "png"
        self.urls: list[str] = []

    def __call__(self, url: str, headers: Mapping[str, str] | None = None,
                 validators: Mapping[str, str] | None = None, accept: str = "image/*") -> Fetched:
        self.urls.append(url)
        outcome = self.outcome
        if outcome == "png-304" and validators is not None:
            return Fetched(304, b"", "", {"Cache-Control": "max-age=120"})
        if outcome.startswith("png"):
            cc = {"png-no-store": "no-store", "png-no-cache": "no-cache"}.get(outcome, "max-age=60")
            return Fetched(200, PNG, "image/png", {"Cache-Control": cc, "Last-Modified": LAST_MODIFIED,
                                                    "ETag": '"origin-1"'})
        raise {"not-found": NotFound("image not found at origin"),
               "origin-error": OriginError("origin failed"),
               "timeout": OriginTimeout("origin timed out"),
               "forbidden": Forbidden("target address not allowed")}[outcome]


class RecordingApp:
    """The wrapped app: records exactly what it was handed, returns one known iterable."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, Any]] = []
        self.body = [b"app"]

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        self.calls.append((environ, start_response))
        start_response("200 OK", [("Content-Type", "text/plain")])
        return self.body


class Harness:
    def __init__(self, forward_query: bool, **options: Any) -> None:
        self.app = RecordingApp()
        self.stub = StubFetch()
        self.mw = FastImageCache(self.app, backend="memory", origins=ORIGINS, signing_key=KEY,
                                 forward_query=forward_query, environ={}, **options)
        self.mw.fetcher.fetch = self.stub  # type: ignore[method-assign]

    def reset(self, outcome: str = "png") -> None:
        self.app.calls.clear()
        self.stub.urls.clear()
        self.stub.outcome = outcome


@pytest.fixture(scope="module")
def harnesses() -> Iterator[dict[bool, Harness]]:
    made = {fq: Harness(fq) for fq in (False, True)}
    yield made
    for h in made.values():
        # The real fetcher never ran: no connection pool was ever made.
        assert h.mw.fetcher._pool is None
        h.mw.close()


def call(mw: FastImageCache, environ: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes, Any, Any]:
    """Call the middleware; (status, headers, body, iterable, start_response)."""
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None,
                       ) -> Callable[[bytes], object]:
        seen["status"], seen["headers"] = status, headers
        return lambda data: None  # the legacy write() callable

    result = mw(environ, start_response)
    body = b"".join(result)
    return int(seen["status"].split()[0]), seen["headers"], body, result, start_response


def test_the_network_guard_is_armed(no_network: list[str]) -> None:
    """The real fetch path would be stopped at its first name lookup (nothing is sent)."""
    fetcher = Fetcher(Config.load(environ={}, backend="memory", allowed_networks=["127.0.0.1/32"]))
    try:
        with pytest.raises(NetworkUsed):
            fetcher.fetch("http://localhost:9/x.png")
    finally:
        fetcher.close()
    assert no_network and no_network[-1].startswith("getaddrinfo")
    no_network.clear()  # expected here; the module's final check is about every other test


# --- strategies --------------------------------------------------------------------------------

latin1 = st.characters(min_codepoint=0, max_codepoint=255)


def latin1_text(max_size: int) -> st.SearchStrategy[str]:
    return st.text(alphabet=latin1, max_size=max_size)


# Unicode as a WSGI server hands it over: the UTF-8 bytes, one latin-1 character each.
utf8_as_latin1 = st.text(max_size=3).map(lambda s: s.encode("utf-8").decode("latin-1"))

PATH_FRAGMENTS = ["/", "//", ".", "..", "/..", "../", "/./", "%", "%2e", "%2E", "%2e%2e", "%2f", "%2F",
                  "%5c", "%00", "%25", "%252e", "%252f", "\\", "\x00", "\x01", "\x7f", "\r\n", "\t", " ",
                  "?", "#", ";", "~", "a", "b", "o", "r", "x.png", "img", "é", "\xc3\xa9", "\xff",
                  "\xe2\x80\xae", "\u0085"]
signed_targets = [
    "https://example.com/cat.png", "http://127.0.0.1:9/x.png", "HTTPS://Example.COM:443/%7euser/a%2fb.png?x=1",
    "https://example.com/a/../b.png", "ftp://example.com/a.png", "javascript:alert(1)", "//example.com/x",
    "https://user@example.com/x.png", "not a url", "https://exa mple.com/", "https://[::1/", "https://h:99999/",
    "https://%65xample.com/", "https://example.com/\\x", "http://bücher.example/ü.png",
]
SIGNED_PATHS = [sign_url(t, KEY, prefix=PREFIX) for t in signed_targets]
SIGNED_PATHS += [sign_url("https://example.com/cat.png", OTHER_KEY, prefix=PREFIX)]


def _canonical_or_none(url: str) -> str | None:
    try:
        return canonical_url(url)
    except ValueError:
        return None


# What a signed route may resolve to: only URLs this module signed with the configured key.
SIGNED_CANONICAL = {c for c in map(_canonical_or_none, signed_targets) if c}

path_heads = st.sampled_from(["/_fic", "/_fic/", "/_fic/o/a/", "/_fic/o/b/", "/_fic/o/a", "/_fic/o/",
                              "/_fic/o/zz/", "/_fic/o/A/", "/_fic/r/", "/_fic/r/x/", "/_fic//o/a/",
                              "/_fic/_admin/", "/_ficx", "/_ficx/o/a/", "/_fic\x00/o/a/", "/_fi", "/",
                              "", "/_FIC/o/a/", "/x/_fic/o/a/", "_fic/o/a/", *SIGNED_PATHS])
path_tails = st.lists(st.one_of(st.sampled_from(PATH_FRAGMENTS), latin1_text(4), utf8_as_latin1),
                      max_size=10).map("".join)
path_infos = st.one_of(st.builds(lambda h, t: h + t, path_heads, path_tails), latin1_text(30))
query_strings = st.one_of(
    st.just(""),
    st.lists(st.one_of(st.sampled_from(["&", "=", "%", "%41", "%7e", "%zz", "%2f", "?", "+", "a", "é",
                                        "\xc3\xa9", "\x00", " "]), latin1_text(3)), max_size=8).map("".join))
methods = st.sampled_from(["GET", "GET", "GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH",
                           "get", "TRACE", ""])
header_values = st.one_of(st.none(), st.sampled_from(['"x"', "*", 'W/"x"', LAST_MODIFIED, strong_etag(PNG),
                                                      f"W/{strong_etag(PNG)}", "garbage"]),
                          latin1_text(20))


@st.composite
def raw_uris(draw: st.DrawFn, path: str, query: str) -> str | None:
    kind = draw(st.sampled_from(["none", "quoted", "quoted-with-sep", "arbitrary"]))
    if kind == "none":
        return None
    if kind == "arbitrary":
        return draw(latin1_text(30))
    raw = quote(path.encode("latin-1"), safe="/;:@&=+$,~")
    if kind == "quoted-with-sep" and "/" in raw[1:]:
        i = draw(st.integers(1, len(raw) - 1))
        raw = raw[:i] + draw(st.sampled_from(["%2f", "%2F", "%5c", "%00"])) + raw[i:]
    return raw + (f"?{query}" if query else "")


@st.composite
def environs(draw: st.DrawFn) -> dict[str, Any]:
    path = draw(path_infos)
    query = draw(query_strings)
    environ: dict[str, Any] = {"REQUEST_METHOD": draw(methods), "PATH_INFO": path, "QUERY_STRING": query,
                               "SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": "80",
                               "REMOTE_ADDR": "127.0.0.1", "wsgi.url_scheme": "http"}
    if draw(st.booleans()):
        del environ["QUERY_STRING"]
    raw = draw(raw_uris(path, query))
    if raw is not None:
        environ[draw(st.sampled_from(["RAW_URI", "REQUEST_URI"]))] = raw
    for name in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE"):
        value = draw(header_values)
        if value is not None:
            environ[name] = value
    return environ


def _is_under_prefix(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


def _check_target_url(url: str, path: str) -> None:
    """What every URL handed to the fetcher must satisfy."""
    assert not _CONTROL_OR_BACKSLASH.search(url), url
    assert canonical_url(url) == url  # already canonical: one spelling, one key
    mode, _, rest = path[len(PREFIX) + 1:].partition("/")
    if mode == "o":
        base = ORIGINS[rest.partition("/")[0]]
        assert url.startswith(base + "/"), (url, base)
        segments = url.partition("?")[0][len(base) + 1:].split("/")
        assert not {".", ".."} & set(segments), url
        assert "/../" not in url and "/./" not in url
    else:
        assert mode == "r"
        assert url in SIGNED_CANONICAL, url


# === 1. The WSGI boundary ===========================================================================

@fuzz(1000)
@given(environ=environs(), forward_query=st.booleans(), outcome=st.sampled_from(StubFetch.OUTCOMES))
@example(environ={"REQUEST_METHOD": "GET", "PATH_INFO": "/_fic/o/a/%2e%2e/x"}, forward_query=False,
         outcome="png")
@example(environ={"REQUEST_METHOD": "GET", "PATH_INFO": "/_fic/o/a/a/b", "RAW_URI": "/_fic/o/a/a%2Fb"},
         forward_query=False, outcome="png")
@example(environ={"REQUEST_METHOD": "GET", "PATH_INFO": "/_ficx/o/a/x"}, forward_query=False, outcome="png")
def test_any_request_gets_a_contract_answer(harnesses: dict[bool, Harness], environ: dict[str, Any],
                                            forward_query: bool, outcome: str) -> None:
    h = harnesses[forward_query]
    h.reset(outcome)
    before = dict(environ)
    status, headers, body, result, start_response = call(h.mw, environ)
    path = environ.get("PATH_INFO", "")
    if not _is_under_prefix(path):
        # Pass-through: the very same objects, the app's own iterable, nothing fetched.
        assert len(h.app.calls) == 1
        assert h.app.calls[0][0] is environ and h.app.calls[0][1] is start_response
        assert result is h.app.body and not h.stub.urls
        assert environ == before
        return
    assert not h.app.calls
    assert status in TABLE_STATUSES, (status, body)
    header_map = {k.lower(): v for k, v in headers}
    assert len(header_map) == len(headers), headers  # no header sent twice
    assert header_map["x-content-type-options"] == "nosniff"
    assert "set-cookie" not in header_map
    method = environ["REQUEST_METHOD"]
    if method == "HEAD":
        assert body == b""
    if method not in ("GET", "HEAD"):
        assert status == 405 and header_map["allow"] == "GET, HEAD"
    if status >= 400:
        assert header_map["content-type"] == "text/plain; charset=utf-8"
        assert header_map["cache-control"] == "no-store"
        if method != "HEAD":
            assert int(header_map["content-length"]) == len(body)
            text = body.decode("utf-8")
            assert text.endswith("\n") and 1 < len(text) < 200, text
            assert "Traceback" not in text and "127.0.0.1" not in text and "/work" not in text
    elif status == 304:
        assert body == b"" and ("HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ)
        assert "content-length" not in header_map
    else:
        assert status == 200
        assert header_map["content-type"] == "image/png"
        assert header_map["etag"] == strong_etag(PNG)
        assert header_map["cache-status"].startswith("fic;")
        if method == "GET":
            assert body == PNG and header_map["content-length"] == str(len(PNG))
    for url in h.stub.urls:
        _check_target_url(url, path)
    if h.stub.urls and not forward_query:
        assert "?" not in h.stub.urls[0] or path.startswith(PREFIX + "/r/")


# === 2. Canonical URLs and cache keys ===============================================================
#
# A URL is generated as an abstract value (scheme, host, port, segments and query of "atoms")
# and written out in several RFC 3986-equivalent spellings. ``_reference`` is an independent
# canonical form of the abstract value: canonical_url must give exactly it for every spelling.

UNRESERVED = string.ascii_letters + string.digits + "-._~"
SUB_DELIMS = "!$&'()*+,;="
# Reserved characters that mean the same literal or not: the escape is kept as it is.
PATH_RESERVED = SUB_DELIMS + ":@"
QUERY_RESERVED = PATH_RESERVED + "/?"
# Reserved characters that must be escaped to be data here ("/" in a segment, "#"...).
PATH_ESCAPE_ONLY = "/?#[]"
QUERY_ESCAPE_ONLY = "#[]"
# Neither: never literal in a URI; a careless client may send them raw, which is the same.
OTHER = '"<>^`{|}' + "é€\u00a0日"
ESCAPE_ONLY_OTHER = " %\\\x7f\x01"  # never literal (refused raw by canonical_url)

# An atom is (character, escaped): ``escaped`` is part of the identity only for reserved ones.
Atom = tuple[str, bool]
# A @composite's draw or a DataObject's draw method: renderings take either.
Draw = Callable[[st.SearchStrategy[Any]], Any]


def _atoms(reserved: str, escape_only: str, other: str = OTHER + ESCAPE_ONLY_OTHER,
           ) -> st.SearchStrategy[Atom]:
    return st.one_of(
        st.tuples(st.sampled_from(UNRESERVED), st.just(False)),
        st.tuples(st.sampled_from(reserved), st.booleans()),
        st.tuples(st.sampled_from(escape_only), st.just(True)),
        st.tuples(st.sampled_from(other), st.just(True)),
    )


def _decoded(segment: list[Atom]) -> str:
    return "".join(c for c, _ in segment)


DOT = (".", False)
segments = st.one_of(st.lists(_atoms(PATH_RESERVED, PATH_ESCAPE_ONLY), max_size=6),
                     st.sampled_from([[DOT], [DOT, DOT]]))  # "." and "..", maybe spelled %2E


@st.composite
def abstract_urls(draw: st.DrawFn, query: bool = True) -> dict[str, Any]:
    scheme = draw(st.sampled_from(["http", "https"]))
    labels = draw(st.lists(st.from_regex(r"[a-z][a-z0-9-]{0,8}[a-z0-9]|[a-z]", fullmatch=True),
                           min_size=1, max_size=3))
    host = draw(st.one_of(st.just(".".join(labels)), st.sampled_from(["127.0.0.1", "example.com"])))
    port = draw(st.one_of(st.none(), st.integers(1, 65535)))
    if port == {"http": 80, "https": 443}[scheme]:
        port = None
    path = draw(st.lists(segments, max_size=4))
    if path == [[]]:
        path = []  # "" and "/" are the same path
    q = draw(st.one_of(st.none(), st.lists(_atoms(QUERY_RESERVED, QUERY_ESCAPE_ONLY), max_size=8)))
    return {"scheme": scheme, "host": host, "port": port, "path": path, "query": q if query else None}


def _escape(char: str, draw: Draw) -> str:
    out = []
    for byte in char.encode("utf-8"):
        hexdigits = f"{byte:02X}"
        out.append("%" + "".join(d.lower() if draw(st.booleans()) else d for d in hexdigits))
    return "".join(out)


def _render_atoms(atoms: list[Atom], reserved: str, draw: Draw, wsgi: bool = False) -> str:
    """``wsgi``: a raw character as PEP 3333 hands it over (its UTF-8 bytes, as latin-1)."""
    out = []
    for char, escaped in atoms:
        if char in UNRESERVED:
            out.append(_escape(char, draw) if draw(st.booleans()) else char)
        elif char in reserved:
            out.append(_escape(char, draw) if escaped else char)
        elif char in OTHER and draw(st.booleans()):
            out.append(char.encode("utf-8").decode("latin-1") if wsgi else char)
        else:
            out.append(_escape(char, draw))
    return "".join(out)


def _case(text: str, draw: Draw) -> str:
    return "".join(c.upper() if draw(st.booleans()) else c for c in text)


def render(url: dict[str, Any], draw: Draw) -> str:
    """One spelling of ``url``: case of scheme/host/hex digits, escapes of unreserved
    characters, default port spelled or not, root dot, "" or "/" for the empty path."""
    scheme = _case(url["scheme"], draw)
    host = _case(url["host"], draw)
    if not host[-1].isdigit() and draw(st.booleans()):
        host += "."
    default = {"http": 80, "https": 443}[url["scheme"]]
    port = url["port"]
    if port is None:
        port_text = draw(st.sampled_from(["", ":", f":{default}", f":0{default}"]))
    else:
        port_text = draw(st.sampled_from([f":{port}", f":0{port}"]))
    path = "".join("/" + _render_atoms(s, PATH_RESERVED, draw) for s in url["path"])
    if not path and draw(st.booleans()):
        path = "/"
    query = "" if url["query"] is None else "?" + _render_atoms(url["query"], QUERY_RESERVED, draw)
    fragment = draw(st.sampled_from(["", "#", "#frag", "#a/../b?c"]))
    return f"{scheme}://{host}{port_text}{path}{query}{fragment}"


def _canonical_atoms(atoms: list[Atom], reserved: str) -> str:
    out = []
    for char, escaped in atoms:
        if char in UNRESERVED or (char in reserved and not escaped):
            out.append(char)
        else:
            out.append("".join(f"%{b:02X}" for b in char.encode("utf-8")))
    return "".join(out)


def _without_dot_segments(segments: list[str]) -> list[str]:
    """RFC 3986 §5.2.4 on the segments of an absolute path (written independently of urls.py)."""
    out: list[str] = []
    for i, segment in enumerate(segments):
        if segment in (".", ".."):
            if segment == ".." and out:
                out.pop()
            if i == len(segments) - 1:
                out.append("")  # "/a/.." is "/", "/a/." is "/a/"
        else:
            out.append(segment)
    return out


def _reference(url: dict[str, Any]) -> str:
    port = f":{url['port']}" if url["port"] is not None else ""
    segments = _without_dot_segments([_canonical_atoms(s, PATH_RESERVED) for s in url["path"]])
    path = "".join("/" + s for s in segments) or "/"
    query = _canonical_atoms(url["query"] or [], QUERY_RESERVED)
    return f"{url['scheme']}://{url['host']}{port}{path}{'?' + query if query else ''}"


@st.composite
def spellings(draw: st.DrawFn, n: int = 3) -> tuple[dict[str, Any], list[str]]:
    url = draw(abstract_urls())
    return url, [render(url, draw) for _ in range(n)]


@pytest.fixture(scope="module")
def router() -> Router:
    return Router(Config.load(environ={}, backend="memory", origins=ORIGINS, signing_key=KEY))


def _signed(url: str, key: str = KEY) -> str:
    return sign_url(url, key, prefix=PREFIX)[len(PREFIX):]


@fuzz(150)
@given(spelled=spellings())
@example(spelled=({"scheme": "https", "host": "example.com", "port": None, "path": [[("~", False)]],
                   "query": None}, ["HTTPS://Example.COM:443/%7e", "https://example.com./~", "https://example.com:/%7E"]))
def test_equivalent_spellings_have_one_canonical_url_and_one_key(router: Router,
                                                                 spelled: tuple[dict[str, Any], list[str]]
                                                                 ) -> None:
    url, spelled_urls = spelled
    expected = _reference(url)
    for text in spelled_urls:
        note(text)
        assert canonical_url(text) == expected
        request = router.route(_signed(text))
        assert request.url == expected
        assert request.key == cache_key(expected)
    assert canonical_url(expected) == expected  # idempotent


@fuzz(100)
@given(first=abstract_urls(), second=abstract_urls(), spell=st.data())
def test_different_urls_never_share_a_key(router: Router, first: dict[str, Any], second: dict[str, Any],
                                          spell: st.DataObject) -> None:
    one = router.route(_signed(render(first, spell.draw)))
    two = router.route(_signed(render(second, spell.draw)))
    same_resource = _reference(first) == _reference(second)
    assert (one.url == two.url) == same_resource
    assert (one.key == two.key) == same_resource
    assert len(one.key) == len(two.key) == 16


image_paths = st.lists(st.one_of(st.sampled_from(["a", "b", "/", "%", "4", "1", "é", "\xc3\xa9", ".", "~",
                                                  "!", "?", "#", "+", " ", ";"]), latin1_text(2)),
                       min_size=1, max_size=8).map("".join)


@fuzz(300)
@given(name=st.sampled_from(["a", "b", "c", "", "A"]), path=image_paths,
       query=st.one_of(st.just(""), query_strings))
@example(name="a", path="..%2f", query="")
@example(name="b", path="x/../../y", query="")
def test_mapped_routes_stay_under_their_base(router: Router, name: str, path: str, query: str) -> None:
    try:
        request = router.route(f"/o/{name}/{path}", query)
    except (BadRequest, NotFound) as exc:
        note(repr(exc))
        return
    base = ORIGINS[name]
    url = request.url
    assert url.startswith(base + "/")
    assert not _CONTROL_OR_BACKSLASH.search(url)
    assert "/../" not in url and "/./" not in url
    assert not {".", ".."} & set(url.partition("?")[0][len(base) + 1:].split("/"))
    assert canonical_url(url) == url
    assert request.key == cache_key(url)


@fuzz(300)
@given(first=st.tuples(st.sampled_from(["a", "b"]), image_paths),
       second=st.tuples(st.sampled_from(["a", "b"]), image_paths))
@example(first=("a", "x%2541"), second=("a", "x%A"))
@example(first=("b", "a b"), second=("b", "a%20b"))
def test_distinct_mapped_targets_get_distinct_keys(router: Router, first: tuple[str, str],
                                                   second: tuple[str, str]) -> None:
    """PATH_INFO is already decoded: two different decoded paths are two resources."""
    try:
        one = router.route(f"/o/{first[0]}/{first[1]}")
        two = router.route(f"/o/{second[0]}/{second[1]}")
    except BadRequest:
        return
    same = ORIGINS[first[0]] + "/" + first[1] == ORIGINS[second[0]] + "/" + second[1]
    assert (one.url == two.url) == same
    assert (one.key == two.key) == same


@fuzz(200)
@given(q=st.lists(_atoms(QUERY_RESERVED, QUERY_ESCAPE_ONLY), max_size=10), spell=st.data())
def test_forwarded_query_spellings_share_a_key(harnesses: dict[bool, Harness], q: list[Atom],
                                               spell: st.DataObject) -> None:
    """forward_query: an escaped unreserved character, lower-case hex, or a raw byte the
    client did not escape is the same query as its canonical spelling."""
    router = harnesses[True].mw.router
    keys = set()
    for _ in range(3):
        query = _render_atoms(q, QUERY_RESERVED, spell.draw, wsgi=True)
        request = router.route("/o/b/x.png", query)
        expected = "https://example.com/x.png" + (f"?{_canonical_atoms(q, QUERY_RESERVED)}" if q else "")
        assert request.url == expected
        keys.add(request.key)
    assert len(keys) == 1


safe_path_atoms = st.one_of(st.tuples(st.sampled_from(UNRESERVED), st.just(False)),
                            st.tuples(st.sampled_from(PATH_RESERVED), st.just(False)),
                            st.tuples(st.sampled_from(OTHER + "%"), st.just(True)))


@fuzz(200)
@given(path=st.lists(st.lists(safe_path_atoms, min_size=1, max_size=5).filter(
    lambda s: _decoded(s) not in (".", "..")),  # a mapped path may not have them at all
    min_size=1, max_size=4), spell=st.data())
def test_mapped_and_signed_names_of_one_url_share_a_key(router: Router, path: list[list[Atom]],
                                                        spell: st.DataObject) -> None:
    """/o/b/{path} and the signed https://example.com/{path} are one cache entry."""
    url = {"scheme": "https", "host": "example.com", "port": None, "path": path, "query": None}
    signed = router.route(_signed(render(url, spell.draw)))
    # What a WSGI server puts in PATH_INFO: the decoded bytes, as latin-1.
    decoded = "/".join(_decoded(s) for s in path).encode("utf-8").decode("latin-1")
    try:
        mapped = router.route(f"/o/b/{decoded}")
    except BadRequest:
        assert re.search(r"%(2e|2f|5c|00)", decoded, re.I)  # a double-encoded separator
        return
    assert mapped.url == signed.url == _reference(url)
    assert mapped.key == signed.key


@fuzz(100)
@given(path=image_paths)
def test_origin_credentials_separate_cache_entries(path: str) -> None:
    """Same URL, other request headers: another entry (never served to the other origin)."""
    config = Config.load(environ={}, backend="memory",
                         origins={"b": ORIGINS["b"], "private": ORIGINS["b"], "private2": ORIGINS["b"]},
                         origin_headers={"private": {"Authorization": "Bearer one"},
                                         "private2": {"Authorization": "Bearer two"}})
    router = Router(config)
    try:
        routes = [router.route(f"/o/{name}/{path}") for name in ("b", "private", "private2")]
    except BadRequest:
        return
    assert len({r.url for r in routes}) == 1
    assert len({r.key for r in routes}) == 3


# === 3. Signatures ===============================================================================

def _hmac_key(key: str) -> bytes:
    """The key HMAC really uses: long keys are hashed, short ones padded with NULs."""
    raw = key.encode("utf-8")
    if len(raw) > 64:
        raw = hashlib.sha256(raw).digest()
    return raw.rstrip(b"\0")


keys = st.text(min_size=1, max_size=80).filter(lambda k: k.strip(" \t\n\r\f\v,") == k and
                                                 not re.search(r"[\s,]", k) and _hmac_key(k) != b"")
key_lists = st.lists(keys, min_size=1, max_size=3, unique_by=_hmac_key)


@fuzz(150)
@given(key_list=key_lists, signer=st.integers(0, 2), spelled=spellings(n=1))
def test_sign_url_round_trips(key_list: list[str], signer: int, spelled: tuple[dict[str, Any], list[str]]
                              ) -> None:
    url, (text,) = spelled
    router = Router(Config.load(environ={}, backend="memory", signing_keys=key_list))
    request = router.route(_signed(text, key_list[signer % len(key_list)]))
    assert request.url == canonical_url(text) == _reference(url)


MUTANTS = st.sampled_from(string.ascii_letters + string.digits + "-_" + "+/=.%~ \x00é")


def _status(exc: RequestError) -> int:
    return int(exc.status)


@fuzz(200)
@given(spelled=spellings(n=1), part=st.sampled_from(["sig", "url"]), where=st.floats(0, 1, exclude_max=True),
       replacement=MUTANTS)
def test_one_character_off_is_refused(harnesses: dict[bool, Harness], spelled: tuple[dict[str, Any], list[str]],
                                      part: str, where: float, replacement: str) -> None:
    _, (text,) = spelled
    _, _, sig, encoded = _signed(text).split("/")
    target = sig if part == "sig" else encoded
    i = int(where * len(target))
    if target[i] == replacement:
        return
    mutated = target[:i] + replacement + target[i + 1:]
    path = f"{PREFIX}/r/{mutated}/{encoded}" if part == "sig" else f"{PREFIX}/r/{sig}/{mutated}"
    h = harnesses[False]
    h.reset()
    status, _, body, _, _ = call(h.mw, {"REQUEST_METHOD": "GET", "PATH_INFO": path})
    assert status in (400, 403), (status, body)
    assert not h.stub.urls


@fuzz(100)
@given(spelled=spellings(n=1), key=keys)
def test_a_signature_with_another_key_is_refused(harnesses: dict[bool, Harness],
                                                 spelled: tuple[dict[str, Any], list[str]], key: str) -> None:
    if _hmac_key(key) == _hmac_key(KEY):
        return  # HMAC itself cannot tell these keys apart ("k" and "k\0")
    h = harnesses[False]
    h.reset()
    status, _, _, _, _ = call(h.mw, {"REQUEST_METHOD": "GET", "PATH_INFO": PREFIX + _signed(spelled[1][0], key)})
    assert status == 403
    assert not h.stub.urls


@fuzz(300)
@given(raw=st.one_of(st.binary(max_size=80), st.text(max_size=60).map(lambda t: t.encode("utf-8")),
                     st.builds(lambda a, b: a + b, st.sampled_from([b"http://", b"https://", b"HTTP://h",
                                                                    b"https://[", b"https://h:", b"//",
                                                                    b"https://example.com/", b"https://a@b/"]),
                               st.binary(max_size=40))))
def test_any_signed_bytes_are_routed_or_refused_cleanly(router: Router, raw: bytes) -> None:
    """Whatever a key holder signs, routing answers a canonical URL or a 400/403/404."""
    path = f"/r/{b64encode(hmac.new(KEY.encode(), raw, hashlib.sha256).digest())}/{b64encode(raw)}"
    try:
        request = router.route(path)
    except RequestError as exc:
        assert _status(exc) in (400, 403, 404), exc
        return
    assert request.url.startswith(("http://", "https://"))
    assert not _CONTROL_OR_BACKSLASH.search(request.url)
    assert canonical_url(request.url) == request.url


# === 4. Header parsing ===========================================================================

_DIGITS = st.one_of(st.integers(-5, 10**6).map(str), st.integers(0, 10**400).map(str),
                    st.sampled_from(["1" + "0" * 400, "9" * 5000]))
cc_tokens = st.one_of(
    st.sampled_from(["max-age", "s-maxage", "no-store", "no-cache", "private", "public", "immutable",
                     "must-revalidate", "stale-while-revalidate", "no-cache=\"Set-Cookie\"", "=", ",", ", ",
                     ";", '"', " ", "\t", "MAX-AGE", "max-age=", "max-age=\"60\"", "-", "+", "0x10", "1e3",
                     "1.5", "\x00", "é"]),
    _DIGITS, latin1_text(4))
cache_controls = st.one_of(st.none(), st.lists(cc_tokens, max_size=10).map("".join))
date_tokens = st.one_of(
    st.sampled_from(["Mon", "Tue", "Sun", ",", " ", "Jan", "Feb", "Dec", "GMT", "UTC", "+0000", "-9999", "+9999",
                     "+99999999999999", ":", "00", "24", "60", "99", "1970", "0001", "9999", "10000", "-1",
                     "\x00", "é"]),
    _DIGITS, latin1_text(4))
dates = st.one_of(
    st.none(),
    st.floats(-6.2e10, 2.5e11).map(lambda t: formatdate(t, usegmt=True)),
    st.floats(-6.2e10, 2.5e11).map(lambda t: formatdate(t, localtime=False)),
    st.lists(date_tokens, max_size=12).map("".join),
    st.text(max_size=30))
etag_lists = st.one_of(
    st.none(),
    st.lists(st.one_of(st.sampled_from(['"a"', 'W/"a"', "*", ",", " ", "W/", '"', strong_etag(PNG),
                                        f"W/{strong_etag(PNG)}", strong_etag(PNG).strip('"'), "\x00"]),
                       latin1_text(4)), max_size=8).map("".join))


@fuzz(500)
@given(cache_control=cache_controls, expires=dates, date=dates, age=st.floats(0, 1e12),
       default=st.floats(0, 1e9), now=st.floats(0, 4e9))
def test_freshness_is_none_or_finite_numbers(cache_control: str | None, expires: str | None,
                                            date: str | None, age: float, default: float,
                                            now: float) -> None:
    policy = Policy(default, 0.0, 1e9, 60.0, 86400.0)
    freshness = policy.freshness(cache_control, expires, date, age, now)
    if freshness is not None:
        for value in (freshness.lifetime, freshness.stale_while_revalidate, freshness.stale_if_error):
            assert math.isfinite(value) and value >= 0, freshness


@fuzz(500)
@given(if_none_match=etag_lists, if_modified_since=dates, last_modified=dates)
def test_is_not_modified_never_raises(if_none_match: str | None, if_modified_since: str | None,
                                      last_modified: str | None) -> None:
    entry = Entry(PNG, "image/png", strong_etag(PNG), last_modified, None, 0.0, 60.0)
    answer = is_not_modified(entry, if_none_match, if_modified_since)
    assert isinstance(answer, bool)
    # Servers strip a field value's surrounding whitespace (RFC 9110 §5.5) before the app sees it.
    if if_none_match is not None and (if_none_match.strip() == strong_etag(PNG) or if_none_match == "*"):
        assert answer


@fuzz(500)
@given(lifetime=st.one_of(st.floats(allow_nan=False), st.just(0.0), st.just(-0.0)),
       bounds=st.tuples(st.floats(0, 1e12), st.floats(0, 1e12)).map(sorted))
def test_clamp_stays_within_the_bounds(lifetime: float, bounds: list[float]) -> None:
    low, high = bounds
    result = Policy(0.0, low, high, 0.0, 0.0).clamp(lifetime)
    if lifetime <= 0.0:
        assert result == 0.0  # stale at once stays stale
    else:
        assert low <= result <= high, (lifetime, low, high, result)


@fuzz(300)
@given(cache_control=cache_controls, expires=dates, date=dates, age=st.floats(0, 1e6),
       bounds=st.tuples(st.floats(0, 1e9), st.floats(0, 1e9)).map(sorted))
def test_freshness_is_bounded(cache_control: str | None, expires: str | None, date: str | None,
                              age: float, bounds: list[float]) -> None:
    freshness = Policy(86400.0, bounds[0], bounds[1], 60.0, 60.0).freshness(
        cache_control, expires, date, age, 1.7e9)
    if freshness is not None:
        assert 0.0 <= freshness.lifetime <= bounds[1]
        assert freshness.stale_while_revalidate <= 60.0 and freshness.stale_if_error <= 60.0


# === 5. Options ==================================================================================

_SIZES = st.builds(lambda n, sp, u: f"{n}{sp}{u}", st.one_of(_DIGITS, st.floats(0, 1e6).map(str)),
                   st.sampled_from(["", " "]),
                   st.sampled_from(["", "b", "k", "KiB", "mb", "MiB", "g", "GiB", "TiB", "x", "ms", "s", "d"]))
_LIST_WORDS = st.sampled_from(["127.0.0.1/32", "10.0.0.0/8", "::1", "fe80::/10", "300.1.1.1", "example.com",
                               "*.example.com", "*.", "*", "bücher.example", "image/png", "image/jpg",
                               "image/svg+xml", "text/html", "a" * 70, "[::1]", "%41", ",", " ", "\n"])
_LISTS = st.lists(st.one_of(_LIST_WORDS, latin1_text(5)), max_size=5).map(" ".join)
_ORIGIN_PAIRS = st.lists(st.builds(lambda n, u: f"{n}={u}",
                                   st.sampled_from(["cdn", "a", "A", "my-cdn", "x_y", "", "bad name", "é"]),
                                   st.one_of(st.sampled_from(["https://example.com/img", "http://127.0.0.1:9",
                                                              "ftp://x", "https://", "https://h/?q",
                                                              "https://h/#f", "https://u@h/",
                                                              "https://h:99999/", "//h/x", "https://[::1]/x"]),
                                             latin1_text(8))),
                         max_size=3).map(lambda pairs: ",".join(pairs))
_BOOLS = st.sampled_from(["true", "false", "yes", "no", "on", "off", "1", "0", "TRUE", " on ", "2", "", "none"])
option_values = st.one_of(st.text(max_size=20), latin1_text(20), _SIZES, _LISTS, _ORIGIN_PAIRS, _BOOLS,
                          st.sampled_from(["", " ", "none", "None", "0", "-1", "nan", "inf", "1e3", "²", "٣",
                                           "/_fic", "/", "_fic", "/a b", "memory", "lmdb", "10MiB", "30s", "5m",
                                           "1d", "1.5h", "9" * 400]))
# Options naming files that Config.load reads or checks.
FILE_OPTIONS = {o.name for o in OPTIONS if o.name.endswith("_file")} | {"ca_bundle"}
# Under backend memory cache_dir is only parsed; an lmdb backend would create directories.
FUZZED_OPTIONS = sorted(o.name for o in OPTIONS)


def _check_config(config: Config) -> None:
    for option in OPTIONS:
        value = getattr(config, option.name)
        if isinstance(value, float):
            assert value >= 0 and math.isfinite(value), (option.name, value)
        if isinstance(value, int) and not isinstance(value, bool):
            assert value >= 0, (option.name, value)


def _load(name: str, value: str, load: Callable[[], Config]) -> None:
    note(f"{name} = {value!r}")
    if name in FILE_OPTIONS and value.lstrip().startswith(("/", "~")):
        return  # never read arbitrary files of this machine (e.g. /dev/zero)
    try:
        config = load()
    except ConfigError as exc:  # any other exception fails the property
        assert str(exc).strip(), exc
        return
    assert isinstance(config, Config)
    _check_config(config)


@fuzz(600)
@given(name=st.sampled_from(FUZZED_OPTIONS), value=option_values)
def test_any_keyword_option_gives_a_config_or_a_config_error(name: str, value: str) -> None:
    options = {"backend": "memory", name: value}
    _load(name, value, lambda: Config.load(environ={}, **options))


@fuzz(400)
@given(name=st.sampled_from(FUZZED_OPTIONS), value=option_values.filter(lambda v: "\x00" not in v),
       headers=st.one_of(st.none(), st.text(max_size=20)))
def test_any_environment_option_gives_a_config_or_a_config_error(name: str, value: str, headers: str | None
                                                                 ) -> None:
    environ = {"FIC_BACKEND": "memory", f"FIC_{name.upper()}": value}
    if headers is not None:  # FIC_ORIGIN_HEADERS_<ORIGIN>: one origin's request headers
        environ["FIC_ORIGIN_HEADERS_CDN"] = headers
    _load(name, value, lambda: Config.load(environ=environ))


@pytest.fixture(scope="module")
def ini_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("fuzz-ini") / "fic.ini")


@fuzz(200)
@given(name=st.sampled_from([n for n in FUZZED_OPTIONS if n not in ("config_file", "backend")]),
       value=option_values.map(lambda v: re.sub(r"[\r\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]", " ", v)))
def test_any_ini_option_gives_a_config_or_a_config_error(ini_file: str, name: str, value: str) -> None:
    with open(ini_file, "w", encoding="utf-8") as fh:
        fh.write(f"[fic]\nbackend = memory\n{name} = {value}\n")
    _load(name, value, lambda: Config.load(environ={}, config_file=ini_file))


# === Regressions: the minimal examples of bugs these properties found =============================

def test_non_canonical_base64_is_refused(harnesses: dict[bool, Harness]) -> None:
    """A signature's last character has unused low bits; setting them must not verify
    (signing.b64decode accepted any spelling of the same bytes)."""
    path = sign_url("https://example.com/cat.png", KEY, prefix=PREFIX)
    _, _, sig, encoded = path[len(PREFIX):].split("/")
    # 43 characters carry 258 bits for a 256-bit HMAC: the last character's 2 low bits are unused.
    alphabet = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"
    respelled = sig[:-1] + alphabet[alphabet.index(sig[-1]) ^ 1]
    assert respelled != sig
    h = harnesses[False]
    h.reset()
    status, _, _, _, _ = call(h.mw, {"REQUEST_METHOD": "GET", "PATH_INFO": f"{PREFIX}/r/{respelled}/{encoded}"})
    assert status in (400, 403)
    assert not h.stub.urls


def test_an_empty_key_in_signing_keys_is_a_config_error() -> None:
    """signing_keys=[""] was accepted: anyone could then sign URLs with the empty key."""
    with pytest.raises(ConfigError):
        Config.load(environ={}, backend="memory", signing_key="secret", signing_keys=[""])


def test_huge_max_age_is_a_finite_lifetime() -> None:
    """float() of a 401-digit max-age raised OverflowError."""
    freshness = Policy(60.0, 0.0, 2e53, 0.0, 0.0).freshness("max-age=1" + "0" * 400, None, None, 0.0, 0.0)
    assert freshness is not None
    lifetime = freshness.lifetime
    assert lifetime is not None and math.isfinite(lifetime)


def test_huge_max_age_from_the_origin_is_not_a_500() -> None:
    """... and the middleware answered that origin response with a 500."""
    h = Harness(False)
    h.mw.fetcher.fetch = lambda url, headers=None, validators=None, accept="": Fetched(  # type: ignore[method-assign]
        200, PNG, "image/png", {"Cache-Control": "max-age=1" + "0" * 400})
    try:
        status, _, _, _, _ = call(h.mw, {"REQUEST_METHOD": "GET", "PATH_INFO": "/_fic/o/b/x.png"})
    finally:
        h.mw.close()
    assert status == 200


def test_raw_utf8_query_is_forwarded_as_its_bytes(harnesses: dict[bool, Harness]) -> None:
    """urls.normalize_query encoded the WSGI (latin-1) query string as UTF-8: a raw "é"
    reached the origin as %C3%83%C2%A9 and had another key than "%C3%A9"."""
    router = harnesses[True].mw.router
    # A client sent "?q=é" raw (UTF-8 bytes C3 A9); PEP 3333 hands them over as "\xc3\xa9".
    assert router.route("/o/b/x.png", "q=\xc3\xa9").url == "https://example.com/x.png?q=%C3%A9"


def test_dot_segments_in_signed_urls_are_removed(router: Router) -> None:
    """canonical_url kept dot segments (RFC 3986 §6.2.2.3) that urllib3 removes before
    sending: one resource, two cache keys."""
    one = router.route(_signed("https://example.com/a/../b.png"))
    two = router.route(_signed("https://example.com/b.png"))
    assert one.url == two.url == "https://example.com/b.png"
    assert one.key == two.key


@pytest.mark.parametrize("name", sorted(FILE_OPTIONS | {"cache_dir"}))
def test_nul_in_a_path_option_is_a_config_error(name: str) -> None:
    """open() and os.makedirs() raise ValueError (not ConfigError) for a path with a NUL."""
    backend = "lmdb" if name == "cache_dir" else "memory"  # refused before any directory is made
    with pytest.raises(ConfigError, match=name):
        Config.load(environ={}, backend=backend, **{name: "x\x00"})


def test_non_decimal_digits_in_a_count_are_a_config_error() -> None:
    """'²'.isdigit() is True, but int('²') raised ValueError."""
    with pytest.raises(ConfigError, match="retries"):
        Config.load(environ={}, backend="memory", retries="²")


@pytest.mark.parametrize("name", ["max_entries", "retries", "miss_burst"])
def test_a_count_too_long_for_int_is_a_config_error(name: str) -> None:
    """int() of more than 4300 digits raises ValueError (Python's int/str conversion limit)."""
    with pytest.raises(ConfigError, match=name):
        Config.load(environ={}, backend="memory", **{name: "9" * 5000})


def test_size_too_large_for_a_float_is_a_config_error() -> None:
    """A 400-digit size became float inf, and int(inf) raised OverflowError."""
    with pytest.raises(ConfigError, match="max_bytes"):
        Config.load(environ={}, backend="memory", max_bytes="9" * 400)


def test_duration_too_large_for_a_float_is_a_config_error() -> None:
    """A 400-digit duration was accepted as inf (socket.settimeout(inf) raises later)."""
    with pytest.raises(ConfigError, match="total_timeout"):
        Config.load(environ={}, backend="memory", total_timeout="9" * 400)


@pytest.mark.parametrize("environ, options", [({"FIC_CONFIG_FILE": ""}, {}), ({}, {"config_file": ""}),
                                              ({}, {"config_file": "none"})])
def test_empty_config_file_means_none(environ: dict[str, str], options: dict[str, str]) -> None:
    """config_file '' parsed to None, then read_file(None) raised TypeError."""
    config = Config.load(environ=environ, backend="memory", **options)
    assert config.config_file is None
