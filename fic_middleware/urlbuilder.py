"""``fic_url``: the path under the prefix that serves an image, for templates and views.

The Flask and Pyramid integrations use it; any other framework can too::

    from fic_middleware.urlbuilder import UrlBuilder
    fic_url = UrlBuilder(fic.config)          # fic: the FastImageCache
    fic_url("2024/cat.jpg", origin="cdn")     # '/_fic/o/cdn/2024/cat.jpg'
    fic_url("cdn/2024/cat.jpg")               # the same
    fic_url("https://images.example.com/media/2024/cat.jpg")
    # '/_fic/o/cdn/2024/cat.jpg' if that is under the origin "cdn", else a signed
    # '/_fic/r/{sig}/{b64url}' (with a signing key), else ValueError

Every URL it returns is first routed by the middleware's own :class:`~.routing.Router`, so
a URL the middleware would refuse (traversal, a host outside ``allowed_hosts``, too long)
is a ``ValueError`` while the page renders, not a broken image later. The result is
relative to the app's root: prepend ``SCRIPT_NAME`` when the app is mounted below one
(the integrations do).
"""

from __future__ import annotations

from urllib.parse import quote, unquote_to_bytes, urlsplit

from .config import Config
from .errors import RequestError
from .routing import Router
from .signing import sign_url
from .urls import PATH_SAFE, canonical_url


class UrlBuilder:
    """``builder(target, origin=None)`` -> path under the prefix; see the module docstring.

    :param config: the middleware's config (``FastImageCache.config``).
    """

    __slots__ = ("_prefix", "_origins", "_bases", "_forward_query", "_key", "_router")

    def __init__(self, config: Config) -> None:
        self._prefix = config.prefix
        self._origins = config.origins
        # Longest base first: "https://a/img/thumbs" claims its URLs before "https://a/img".
        self._bases = sorted(config.origins.items(), key=lambda item: -len(item[1]))
        self._forward_query = config.forward_query
        keys = config.verify_keys  # read once, as the middleware's router does
        self._key = keys[0] if keys else None
        self._router = Router(config)

    def __call__(self, target: str, origin: str | None = None) -> str:
        if origin is not None:
            return self._mapped(origin, target)
        if urlsplit(target).scheme:
            return self._absolute(target)
        name, sep, path = target.partition("/")
        if sep and name in self._origins:
            return self._mapped(name, path)
        raise ValueError(f"fic_url: {target!r} is neither an absolute http(s) URL nor "
                         f"'<origin>/<path>' with a configured origin ({self._names()})")

    def _names(self) -> str:
        return ", ".join(sorted(self._origins)) or "none configured"

    def _mapped(self, origin: str, path: str) -> str:
        """``path`` is the decoded path below the origin's base URL, e.g. ``2024/my cat.jpg``."""
        if origin not in self._origins:
            raise ValueError(f"fic_url: no origin named {origin!r} (origins: {self._names()})")
        return self._checked(f"/o/{origin}/{quote(path.lstrip('/'), safe=PATH_SAFE)}", path)

    def _absolute(self, target: str) -> str:
        try:
            url = canonical_url(target)
        except ValueError as exc:
            raise ValueError(f"fic_url: {target!r} is not a usable http(s) URL ({exc})") from None
        for name, base in self._bases:
            if not url.startswith(base + "/"):
                continue
            path, _, query = url[len(base) + 1:].partition("?")
            if query and not self._forward_query:
                continue  # the mapped form would drop the query: another image
            try:
                routed = self._route(f"/o/{name}/{path}", query)
            except RequestError:
                continue  # not expressible as a mapped path (e.g. an encoded slash)
            if routed == url:
                return f"{self._prefix}/o/{name}/{path}" + (f"?{query}" if query else "")
        if self._key is None:
            raise ValueError(f"fic_url: {target!r} is not under a mapped origin, and without "
                             "a signing_key remote URLs cannot be signed")
        signed = sign_url(url, self._key, self._prefix)
        return self._checked(signed[len(self._prefix):], target)

    def _route(self, path: str, query: str) -> str:
        # The path as a WSGI server hands it over: percent-decoded bytes as latin-1 text.
        decoded = unquote_to_bytes(path).decode("latin-1")
        return self._router.route(decoded, query, raw_uri=path).url

    def _checked(self, path: str, target: str) -> str:
        try:
            self._route(path, "")
        except RequestError as exc:
            raise ValueError(f"fic_url: the middleware would refuse {target!r}: {exc}") from None
        return self._prefix + path
