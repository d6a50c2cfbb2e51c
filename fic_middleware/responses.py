"""HTTP values and helpers: responses, headers, conditional requests, ranges. werkzeug's
parsers stay in here and in :mod:`freshness` (their API changes between 3.1 and 3.2);
callers get plain values."""

from __future__ import annotations

import re
from collections.abc import Sequence
from http import HTTPStatus

from werkzeug.http import parse_date, parse_etags

from .errors import MethodNotAllowed, NotFound, RequestError
from .record import MUST_REVALIDATE, NO_CACHE, VARIANT, Entry

Headers = list[tuple[str, str]]

NOSNIFF = ("X-Content-Type-Options", "nosniff")
# An SVG can carry script; opened directly it must not run any or load anything (docs/RESPONSES.md).
SVG_CSP = ("Content-Security-Policy", "default-src 'none'; style-src 'unsafe-inline'; sandbox")
_TEXT = ("Content-Type", "text/plain; charset=utf-8")
_NO_STORE = ("Cache-Control", "no-store")
# A variant chosen by the client's Accept (routing.accept_class): caches after us must know.
_VARY_ACCEPT = ("Vary", "Accept")

HIT = "fic; hit"
SHARED_HIT = "fic; hit; detail=shared"  # from the Redis tier, now in this host's cache too
# Served from the cache while a background fetch refreshes it (RFC 5861 semantics).
STALE_HIT = "fic; hit; fwd=stale"
STALE_IF_ERROR = "fic; hit; fwd=stale; detail=stale-if-error"
# The origin's circuit is open (:mod:`breaker`): not forwarded, so a hit (RFC 9211 §2.1).
ORIGIN_DOWN = "fic; hit; detail=origin-down"
# Waited for another request's fetch of the same image, then served what it stored.
COLLAPSED = "fic; fwd=miss; collapsed"


_STATUS_LINES = {status: f"{status.value} {status.phrase}" for status in HTTPStatus}


class Response:
    """What the WSGI adapter sends: a status (``code``, and the ``status`` line that
    start_response takes), headers, a body (and the entry served)."""

    __slots__ = ("status", "code", "headers", "body", "entry")

    def __init__(self, status: HTTPStatus, headers: Headers, body: bytes,
                 entry: Entry | None = None):
        self.code = status.value
        self.status = _STATUS_LINES[status]
        self.headers = headers
        self.body = body
        self.entry = entry


def error_response(exc: RequestError) -> Response:
    """Short plain text in user terms; never cached by clients or proxies."""
    body = f"{exc}\n".encode()
    headers = [_TEXT, ("Content-Length", str(len(body))), _NO_STORE, NOSNIFF]
    if isinstance(exc, MethodNotAllowed):
        headers.append(("Allow", "GET, HEAD"))
    if exc.retry_after is not None:
        headers.append(("Retry-After", str(exc.retry_after)))
    return Response(exc.status, headers, body)


def fixed_headers(add_headers: dict[str, str], cors_origins: tuple[str, ...]) -> Headers:
    """What every image response carries whoever asks: ``add_headers``, and for
    ``cors_origins`` either ``Access-Control-Allow-Origin: *`` or ``Vary: Origin`` (the
    matching origin itself is added per request by the middleware; the Vary is sent to
    every client, so that no cache after us hands one origin's answer to another)."""
    headers = list(add_headers.items())
    if cors_origins == ("*",):
        headers.append(("Access-Control-Allow-Origin", "*"))
    elif cors_origins:
        headers.append(("Vary", "Origin"))
    return headers


def hit_response(entry: Entry, now: float, client_max_age: float,
                 extra: Sequence[tuple[str, str]] = ()) -> Response:
    """A hit's response, built once per entry per second (only Age and max-age change).

    Shared between requests: the WSGI adapter hands start_response a copy of the headers.
    """
    second = int(now)
    cached = entry.response_memo
    if cached is None or cached[0] != second:
        cached = entry.response_memo = (second, image_response(entry, HIT, now, client_max_age,
                                                                extra=extra))
    response: Response = cached[1]
    return response


# A remembered origin 404/410 (negative caching), answered without asking the origin.
NEGATIVE_HIT = error_response(NotFound("image not found at origin"))
NEGATIVE_HIT.headers.append(("Cache-Status", HIT))


def image_response(entry: Entry, cache_status: str, now: float, client_max_age: float,
                   cacheable: bool = True, extra: Sequence[tuple[str, str]] = ()) -> Response:
    """Headers of an image answer (hit or miss): RFC 9211 Cache-Status, Age, our ETag, the
    origin's replayed headers (``pass_headers``) and ``extra`` (:func:`fixed_headers`)."""
    if not cacheable:
        cache_control = "no-store"
    elif entry.flags & NO_CACHE:  # the origin wants every use checked: so must clients
        cache_control = "public, no-cache"
    else:
        max_age = max(0, min(int(entry.expires_at - now), int(client_max_age)))
        cache_control = f"public, max-age={max_age}"
        if entry.flags & MUST_REVALIDATE:
            cache_control += ", must-revalidate"
    headers = [
        ("Content-Type", entry.content_type),
        ("Content-Length", str(len(entry.body))),
        ("ETag", entry.etag),
        ("Cache-Control", cache_control),
        ("Age", str(max(0, int(now - entry.stored_at)))),
        ("Cache-Status", cache_status),
        NOSNIFF,
    ]
    if entry.last_modified:
        headers.append(("Last-Modified", entry.last_modified))
    if entry.content_type == "image/svg+xml":
        headers.append(SVG_CSP)
    if entry.flags & VARIANT:
        headers.append(_VARY_ACCEPT)
    headers += entry.headers
    headers += extra
    return Response(HTTPStatus.OK, headers, entry.body, entry)


def not_modified(response: Response) -> Response:
    """The 304 for an image answer: same validators and caching headers, no body.
    RFC 9110 §15.4.5: Content-Length of a 304 would describe the omitted body; drop it."""
    headers = [h for h in response.headers if h[0] not in ("Content-Type", "Content-Length")]
    return Response(HTTPStatus.NOT_MODIFIED, headers, b"", response.entry)


def preflight(allow_origin: str) -> Response:
    """The 204 to a CORS preflight (the Fetch standard's CORS protocol) from an allowed
    origin: GET and HEAD only, no request header beyond the safelisted ones, for a day."""
    headers = [("Access-Control-Allow-Origin", allow_origin),
               ("Access-Control-Allow-Methods", "GET, HEAD"),
               ("Access-Control-Max-Age", "86400")]
    if allow_origin != "*":
        headers.append(("Vary", "Origin"))
    return Response(HTTPStatus.NO_CONTENT, headers, b"")


def ranged(response: Response, range_header: str, if_range: str | None) -> Response:
    """A single ``bytes=`` range of an image answer (RFC 9110 §14): 206, or 416 if it
    cannot be satisfied. Several ranges, a syntax we do not read, or an If-Range that does
    not match give the whole 200 back, as the RFC allows."""
    entry = response.entry
    assert entry is not None
    if if_range is not None and if_range.strip() not in (entry.etag, entry.last_modified):
        return response
    bounds = _single_range(range_header, len(entry.body))
    if bounds is None:
        return response
    size = len(entry.body)
    headers = [h for h in response.headers if h[0] != "Content-Length"]
    if bounds is _UNSATISFIABLE:
        headers = [h for h in headers if h[0] != "Content-Type"]
        body = b"range not satisfiable\n"
        headers += [_TEXT, ("Content-Range", f"bytes */{size}"), ("Content-Length", str(len(body)))]
        return Response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, headers, body, None)
    first, last = bounds
    part = entry.body[first:last + 1]
    headers += [("Content-Range", f"bytes {first}-{last}/{size}"), ("Content-Length", str(len(part)))]
    return Response(HTTPStatus.PARTIAL_CONTENT, headers, part, entry)


_UNSATISFIABLE = (-1, -1)
_RANGE = re.compile(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*")


def _single_range(header: str, size: int) -> tuple[int, int] | None:
    match = _RANGE.fullmatch(header)
    if match is None or "," in header:
        return None
    first_text, last_text = match.groups()
    if not first_text:  # suffix: the last N bytes
        if not last_text:
            return None
        length = int(last_text)
        return _UNSATISFIABLE if length == 0 or size == 0 else (max(0, size - length), size - 1)
    first = int(first_text)
    last = int(last_text) if last_text else size - 1
    if last_text and last < first:
        return None
    if first >= size:
        return _UNSATISFIABLE
    return first, min(last, size - 1)


def is_not_modified(entry: Entry, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """RFC 9110 §13.1: If-None-Match wins over If-Modified-Since when both are sent."""
    if if_none_match:
        if if_none_match.strip() == entry.etag:  # the common case, without parsing
            return True
        # Weak comparison for If-None-Match (§13.1.2): W/"x" matches "x".
        return parse_etags(if_none_match).contains_weak(entry.etag.strip('"'))
    if if_modified_since and entry.last_modified:
        since = parse_date(if_modified_since)
        modified = parse_date(entry.last_modified)
        return since is not None and modified is not None and modified <= since
    return False
