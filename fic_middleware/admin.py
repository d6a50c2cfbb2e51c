"""``{prefix}/_admin``: a dashboard, JSON stats, Prometheus metrics and purge.

Only when ``admin_token`` is set (404 otherwise). Data and actions need
``Authorization: Bearer <token>`` (compared in constant time); the dashboard page itself
holds no data: it asks for the token and calls the JSON endpoints with it, so it works
without cookies and without any external asset. Every action and every refused token is
written to the ``fic_middleware.audit`` logger.
"""

from __future__ import annotations

import hmac
import json
import logging
from http import HTTPStatus
from importlib import resources
from typing import TYPE_CHECKING, Any

from . import responses
from .errors import RequestError
from .operations import Operations

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

audit = logging.getLogger("fic_middleware.audit")

_MAX_BODY = 64 * 1024
_JSON = ("Content-Type", "application/json")
_PRIVATE = ("Cache-Control", "no-store")
# The dashboard runs its own inline script and style, and nothing else.
_PAGE_CSP = ("Content-Security-Policy",
             "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
             "connect-src 'self'; form-action 'none'; frame-ancestors 'none'")
_ROUTES = {"/": ("GET", "HEAD"), "/stats": ("GET", "HEAD"), "/metrics": ("GET", "HEAD"),
           "/purge": ("POST",)}


def _response(status: HTTPStatus, body: bytes, *headers: tuple[str, str]) -> responses.Response:
    return responses.Response(status,
                         [*headers, ("Content-Length", str(len(body))), _PRIVATE, responses.NOSNIFF],
                         body)


def _json(data: Any, status: HTTPStatus = HTTPStatus.OK) -> responses.Response:
    return _response(status, json.dumps(data, sort_keys=True).encode(), _JSON)


class Admin:
    """The admin endpoints over :class:`Operations` (the same the ``fic`` command uses)."""

    def __init__(self, operations: Operations, token: str) -> None:
        self.operations = operations
        self._token = f"Bearer {token}".encode()
        self._page = _response(HTTPStatus.OK, resources.files(__package__).joinpath(
            "dashboard.html").read_bytes(), ("Content-Type", "text/html; charset=utf-8"), _PAGE_CSP)

    def respond(self, environ: WSGIEnvironment, method: str, path: str) -> responses.Response:
        """``path`` is what follows ``{prefix}/_admin`` ('' is the dashboard)."""
        path = path or "/"
        methods = _ROUTES.get(path)
        if methods is None:
            return _json({"error": "not found"}, HTTPStatus.NOT_FOUND)
        if method not in methods:
            response = _json({"error": "method not allowed"}, HTTPStatus.METHOD_NOT_ALLOWED)
            response.headers.append(("Allow", ", ".join(methods)))
            return response
        if path == "/":
            return self._page
        client = environ.get("REMOTE_ADDR", "?")
        if not self._authorized(environ):
            audit.warning("admin %s refused: bad or missing token (client %s)", path, client)
            response = _json({"error": "a valid admin token is required"}, HTTPStatus.UNAUTHORIZED)
            response.headers.append(("WWW-Authenticate", 'Bearer realm="fic_middleware"'))
            return response
        if path == "/stats":
            return _json(self.operations.stats())
        if path == "/metrics":
            body, content_type = self.operations.metrics()
            return _response(HTTPStatus.OK, body, ("Content-Type", content_type))
        return self._purge(environ, client)

    def _authorized(self, environ: WSGIEnvironment) -> bool:
        given = environ.get("HTTP_AUTHORIZATION", "").encode("latin-1", "replace")
        return hmac.compare_digest(given, self._token)

    def _purge(self, environ: WSGIEnvironment, client: str) -> responses.Response:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= _MAX_BODY:
            return _json({"error": "send a JSON body of at most 64 KiB"}, HTTPStatus.BAD_REQUEST)
        try:
            request = json.loads(environ["wsgi.input"].read(length))
        except (ValueError, UnicodeDecodeError):
            return _json({"error": "the body is not JSON"}, HTTPStatus.BAD_REQUEST)
        try:
            if not isinstance(request, dict) or len(request) != 1:
                raise ValueError('send one of {"url": ...}, {"path": ...} or {"all": true}')
            ((what, value),) = request.items()
            if what == "all" and value is True:
                purged = self.operations.purge_all()
            elif what == "url" and isinstance(value, str):
                purged = self.operations.purge_url(value)
            elif what == "path" and isinstance(value, str):
                purged = self.operations.purge_path(value)
            else:
                raise ValueError('send one of {"url": ...}, {"path": ...} or {"all": true}')
        except (ValueError, RequestError) as exc:
            return _json({"error": str(exc)}, HTTPStatus.BAD_REQUEST)
        audit.info("admin purge %s=%r by client %s: %d entries", what, value, client, purged)
        return _json({"purged": purged})
