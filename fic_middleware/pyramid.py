"""Pyramid: ``config.include("fic_middleware.pyramid")`` and ``request.fic_url(...)``.

::

    with Configurator(settings={"fic.cache_dir": "/var/cache/fic",
                                "fic.origins": "cdn=https://images.example.com/media"}) as config:
        config.include("fic_middleware.pyramid")
        ...
    app = config.make_wsgi_app()

or ``pyramid.includes = fic_middleware.pyramid`` in the ini file, with ``fic.<option>``
settings (``fic.origin_headers.cdn`` holds that origin's ``Header: value`` lines). Settings
are checked like keyword options, when the include runs; they come from the deployment
file, so a ``FIC_<NAME>`` environment variable beats them (docs/CONFIGURATION.md). In templates and
views, ``request.fic_url("2024/cat.jpg", origin="cdn")`` is the image's URL (see
:mod:`fic_middleware.urlbuilder`), ``SCRIPT_NAME`` included.

How the middleware gets in front of Pyramid: an include cannot wrap the WSGI app that
``make_wsgi_app()`` returns (Pyramid has no hook for WSGI middleware; its docs wrap that
app by hand or in a paste pipeline), and a tween runs after Pyramid has made a request.
The hook that sees the raw environ first is the execution policy
(``Configurator.set_execution_policy``, Pyramid >= 1.9): the router calls
``policy(environ, router)`` and then calls what it returns as a WSGI app. The include
installs :class:`ImagePolicy`, which returns the middleware itself: image requests are
answered by it as plain WSGI, with no Pyramid request made, and it passes everything else
to the execution policy that was set before (Pyramid's default, or e.g. pyramid_retry's).
Wrapping ``config.make_wsgi_app()`` in :class:`~fic_middleware.FastImageCache` by hand
works as well; do one or the other.

The middleware is ``registry["fic_middleware"]``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from pyramid.events import ApplicationCreated
from pyramid.interfaces import PHASE3_CONFIG, IExecutionPolicy
from pyramid.router import default_execution_policy

from .config import file_options
from .middleware import FastImageCache
from .urlbuilder import UrlBuilder

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from pyramid.config import Configurator
    from pyramid.request import Request

REGISTRY_KEY = "fic_middleware"
SETTINGS_PREFIX = "fic."
# After every order-0 action of the same commit, set_execution_policy's included: the
# policy in place by then is the one wrapped.
_WRAP_ORDER = PHASE3_CONFIG + 1


class ImagePolicy:
    """An execution policy that puts a :class:`FastImageCache` in front of ``inner``.

    :param inner: the execution policy for everything outside the prefix.
    :param options: the middleware's options.
    """

    def __init__(self, inner: Any = default_execution_policy, **options: Any) -> None:
        self.inner = inner
        self.router: Any = None
        self.fic = FastImageCache(self._pyramid, **options)

    def __call__(self, environ: WSGIEnvironment, router: Any) -> WSGIApplication:
        return self.fic

    def bind(self, event: ApplicationCreated) -> None:
        """The router that ``make_wsgi_app()`` made: pass-through requests go to it."""
        self.router = event.app

    def _pyramid(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        response = self.inner(environ, self.router)
        body: Iterable[bytes] = response(environ, start_response)
        return body


def includeme(config: Configurator) -> None:
    settings = config.get_settings() or {}
    options = file_options({name[len(SETTINGS_PREFIX):]: value for name, value in settings.items()
                            if name.startswith(SETTINGS_PREFIX)})
    policy = ImagePolicy(**options)  # a wrong setting fails the include, not a request
    config.registry[REGISTRY_KEY] = policy.fic
    urls = UrlBuilder(policy.fic.config)

    def fic_url(request: Request, target: str, origin: str | None = None) -> str:
        return f"{request.script_name}{urls(target, origin)}"

    def install() -> None:
        registry = config.registry
        policy.inner = registry.queryUtility(IExecutionPolicy, default=default_execution_policy)
        registry.registerUtility(policy, IExecutionPolicy)

    config.add_request_method(fic_url, "fic_url")
    config.add_subscriber(policy.bind, ApplicationCreated)
    config.action(("fic_middleware", "execution policy"), install, order=_WRAP_ORDER)
