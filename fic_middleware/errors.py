"""The exception tree.

::

    FicError
     ├── ConfigError (also ValueError)   bad option at start-up
     └── RequestError                     answered to the client, carries .status
          ├── BadRequest            400   malformed path, traversal, bad URL
          ├── Forbidden             403   address or scheme not allowed
          ├── NotFound              404   unknown origin, origin 404/410
          ├── MethodNotAllowed      405
          ├── OriginError           502   origin failed, not an image, too large, TLS
          └── OriginTimeout         504

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


class BadRequest(RequestError):
    status = HTTPStatus.BAD_REQUEST


class Forbidden(RequestError):
    status = HTTPStatus.FORBIDDEN


class NotFound(RequestError):
    status = HTTPStatus.NOT_FOUND


class MethodNotAllowed(RequestError):
    status = HTTPStatus.METHOD_NOT_ALLOWED


class OriginError(RequestError):
    status = HTTPStatus.BAD_GATEWAY


class OriginTimeout(RequestError):
    status = HTTPStatus.GATEWAY_TIMEOUT
