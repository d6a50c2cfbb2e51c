"""The exception tree.

::

    FicError
     ├── ConfigError (also ValueError)   bad option at start-up
     └── RequestError                     answered to the client, carries .status
          ├── BadRequest            400   malformed path, traversal, bad URL
          ├── Forbidden             403   address or scheme not allowed
          ├── NotFound              404   unknown origin, origin 404/410
          ├── MethodNotAllowed      405
          ├── TooManyRequests       429   client over its miss rate (.retry_after)
          ├── OriginError           502   not an image, too large, too many redirects
          │    ├── OriginUnavailable 502  unreachable, TLS or connection failure, 5xx
          │    │    └── OriginDown 503 circuit open: origin not asked (.retry_after)
          │    └── OriginRefused     502  the origin's 4xx (401, 403, 451...): access revoked
          ├── Overloaded            503   too many fetches in flight (.retry_after)
          └── OriginTimeout         504

Only OriginUnavailable (OriginDown included) and OriginTimeout are failures a stale copy
may bridge (``stale_if_error``); an OriginRefused or NotFound from the origin is its
answer, and replaces the stored copy.

A leaf's message is shown to the client as the plain-text body, so it is written for
users and never carries addresses, paths, origin bodies or secrets.
"""

from __future__ import annotations

from http import HTTPStatus


class FicError(Exception):
    """Root of every error fic_middleware raises."""


class ConfigError(FicError, ValueError):
    """An option is wrong; raised at start-up, the message names the option."""


class RequestError(FicError):
    """A request that gets an error status; ``str(exc)`` is the client-facing text."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    #: Seconds after which the client may try again (sent as Retry-After), if any.
    retry_after: int | None = None


class BadRequest(RequestError):
    status = HTTPStatus.BAD_REQUEST


class Forbidden(RequestError):
    status = HTTPStatus.FORBIDDEN


class NotFound(RequestError):
    status = HTTPStatus.NOT_FOUND


class MethodNotAllowed(RequestError):
    status = HTTPStatus.METHOD_NOT_ALLOWED


class TooManyRequests(RequestError):
    status = HTTPStatus.TOO_MANY_REQUESTS

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Overloaded(RequestError):
    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OriginError(RequestError):
    status = HTTPStatus.BAD_GATEWAY


class OriginUnavailable(OriginError):
    """The origin could not answer: it may answer again, so a stale copy can stand in."""


class OriginDown(OriginUnavailable):
    """The origin failed too often in a row: it is not asked again until its cool-down ends
    (:mod:`fic_middleware.breaker`)."""

    status = HTTPStatus.SERVICE_UNAVAILABLE

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class OriginRefused(OriginError):
    """The origin refused the image (a 4xx other than 404/410): it is no longer to be served."""


class OriginTimeout(RequestError):
    status = HTTPStatus.GATEWAY_TIMEOUT
