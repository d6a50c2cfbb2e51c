"""The WSGI boundary: pass-through outside the prefix, environ -> ImageRequest -> response.

Usage::

    from fic_middleware import FastImageCache
    app.wsgi_app = FastImageCache(app.wsgi_app, cache_dir="/var/cache/fic",
                                  origins={"cdn": "https://images.example.com/media"})

Requests whose PATH_INFO is outside the prefix go to the wrapped app untouched: same
environ, same start_response, the app's iterable returned as it is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from . import responses
from .admin import Admin
from .assembly import Parts, build
from .config import Config
from .errors import MethodNotAllowed, NotFound, RequestError
from .limits import client_address

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from typing_extensions import Unpack

    from ._typed_options import Options

log = logging.getLogger("fic_middleware")

_METHOD_NOT_ALLOWED = responses.error_response(MethodNotAllowed("method not allowed"))
_NOT_FOUND = responses.error_response(NotFound("not found"))
_INTERNAL = responses.error_response(RequestError("internal error"))  # status 500
_ADMIN = "/_admin"


class FastImageCache:
    """WSGI middleware serving images under ``prefix`` from a local cache.

    :param app: the WSGI application to wrap.
    :param config: a ready :class:`~fic_middleware.config.Config` (adapters build one from
        their own sources); or else
    :param options: keyword options (docs/CONFIGURATION.md), merged with ``FIC_*``
        environment variables and ``config_file``. Wrong values raise
        :class:`~fic_middleware.ConfigError` here, not on the first request.
    """

    def __init__(self, app: WSGIApplication, config: Config | None = None,
                 **options: Unpack[Options]) -> None:
        if config is not None and options:
            raise TypeError("pass either a Config or keyword options, not both")
        self._assemble(app, build(config if config is not None else Config.load(**options)))

    @classmethod
    def assembled(cls, app: WSGIApplication, parts: Parts) -> FastImageCache:
        """The middleware over parts built by :func:`fic_middleware.assembly.build` (tests
        pass their own clock that way)."""
        mw = cls.__new__(cls)
        mw._assemble(app, parts)
        return mw

    def _assemble(self, app: WSGIApplication, parts: Parts) -> None:
        self.app = app
        self.parts = parts
        self.config = parts.config
        self.storage = parts.storage
        self.negatives = parts.negatives
        self.fetcher = parts.fetcher
        self.cache = parts.cache
        self.router = parts.router
        self.operations = parts.operations
        self._prefix = self.config.prefix
        self._prefix_len = len(self._prefix)
        self._forward_query = self.config.forward_query
        self._limit_misses = self.config.miss_rate is not None
        self._stats = parts.stats
        self._hit = parts.cache.hit
        self._admin = (Admin(self.operations, self.config.admin_token)
                       if self.config.admin_token else None)
        cors = self.config.cors_origins
        # Exact origins: the matching one is added on the way out (one dict lookup); "*" is
        # prebuilt into every image response (responses.fixed_headers).
        self._cors = ({origin: ("Access-Control-Allow-Origin", origin) for origin in cors}
                      if cors and cors != ("*",) else None)
        self._preflights = {origin: responses.preflight(origin) for origin in cors}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        # Fast path: everything outside the prefix ("/_ficx" is outside "/_fic").
        if not path.startswith(self._prefix) or path[self._prefix_len:self._prefix_len + 1] not in ("/", ""):
            return self.app(environ, start_response)
        method = environ["REQUEST_METHOD"]
        response = self._respond(environ, method, path[self._prefix_len:])
        # A copy: responses are shared (prebuilt errors, a hit's per-second response) and
        # start_response wrappers may append to the list they get.
        headers = list(response.headers)
        if self._cors is not None and response.entry is not None:
            allow = self._cors.get(environ.get("HTTP_ORIGIN", ""))
            if allow is not None:
                headers.append(allow)
        start_response(response.status, headers)
        if method == "HEAD":
            return []
        if response.entry is not None:  # image bytes, not error or admin bodies
            self._stats.served_bytes += len(response.body)
        return [response.body]

    def _respond(self, environ: WSGIEnvironment, method: str, path: str) -> responses.Response:
        if not self._stats.running:  # once per process
            if self.parts.tiers.purges is not None:  # first catch up with the other hosts' purges
                self.parts.tiers.purges.start()
            self._stats.start()
        # "/_admin" is not an image path ("/o/..." or "/r/..."): routed before them.
        if self._admin is not None and path.startswith(_ADMIN) and path[7:8] in ("", "/"):
            return self._admin.respond(environ, method, path[7:])
        if method != "GET" and method != "HEAD":
            if method == "OPTIONS" and self._preflights and len(path) > 1:
                found = self._preflight(environ.get("HTTP_ORIGIN"))
                if found is not None:
                    return found
            return self._error(_METHOD_NOT_ALLOWED)
        if len(path) <= 1:
            return self._error(_NOT_FOUND)
        try:
            query = environ.get("QUERY_STRING", "") if self._forward_query else ""
            request = self.router.route(path, query,
                                        environ.get("RAW_URI") or environ.get("REQUEST_URI"))
            # A memo hit (cache.hit) needs no read of the store; anything else asks respond.
            response = self._hit(request.key) or self.cache.respond(
                request, self._client(environ) if self._limit_misses else None, environ)
        except RequestError as exc:
            log.debug("%s: %s", exc.status.value, exc)
            return self._error(responses.error_response(exc))
        except Exception:
            log.exception("unexpected error serving an image")
            return self._error(_INTERNAL)
        if response.entry is None:
            return response
        inm = environ.get("HTTP_IF_NONE_MATCH")
        ims = environ.get("HTTP_IF_MODIFIED_SINCE")
        if (inm or ims) and responses.is_not_modified(response.entry, inm, ims):
            return responses.not_modified(response)
        range_header = environ.get("HTTP_RANGE")
        if range_header:
            return responses.ranged(response, range_header, environ.get("HTTP_IF_RANGE"))
        return response

    def _preflight(self, origin: str | None) -> responses.Response | None:
        """The 204 to a CORS preflight from a listed origin (``*``: any); None otherwise."""
        if not origin:
            return None
        return self._preflights.get("*") or self._preflights.get(origin)

    def _error(self, response: responses.Response) -> responses.Response:
        self._stats.error(response.code)
        return response

    @classmethod
    def init_app(cls, app: Any, **options: Unpack[Options]) -> FastImageCache:
        """Flask: wrap ``app.wsgi_app`` and add the ``fic_url`` Jinja global; options from
        the keyword arguments, ``FIC_*`` variables, then ``FIC_<NAME>`` keys of
        ``app.config`` (:mod:`fic_middleware.flask_ext`). Flask is imported only here."""
        from .flask_ext import EXTENSION, app_options, install

        if EXTENSION in app.extensions:  # before building a second cache over the same files
            raise RuntimeError(f"fic_middleware: init_app() already ran for {app.name!r}")
        fic = cls(app.wsgi_app, **{**app_options(app), **options})
        install(app, fic)
        return fic

    def _client(self, environ: WSGIEnvironment) -> str:
        return client_address(environ.get("REMOTE_ADDR", ""),
                              environ.get("HTTP_X_FORWARDED_FOR"), self.config.trusted_proxies)

    def purge_url(self, url: str) -> int:
        """Forget the image at an absolute origin URL; entries removed.
        Raises ValueError for a URL that is not absolute http(s)."""
        return self.operations.purge_url(url)

    def purge_path(self, path: str) -> int:
        """Forget the image a client path names (``{prefix}/o/...`` or ``{prefix}/r/...``).
        Raises RequestError (BadRequest, NotFound...) for a path that names no image."""
        return self.operations.purge_path(path)

    def purge_all(self) -> int:
        """Forget every entry; how many there were."""
        return self.operations.purge_all()

    def close(self) -> None:
        """Release the storage, the connection pools and the refresh threads."""
        self.parts.close()
