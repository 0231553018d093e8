"""Plinth's errors: one root, each subclass carrying its HTTP status.

    PlinthError (500)
    ├── InvalidInput (400)         bad name, bad filter, malformed request
    │   ├── DigestMismatch (400)   uploaded bytes do not hash to the claimed digest
    │   └── Unprocessable (422)    text no store keeps (NUL, lone surrogates); over a limit
    ├── Unauthenticated (401)
    ├── PermissionDenied (403)
    ├── NotFound (404)             unknown run, project, artifact or blob
    │   └── BlobMissing (404)      content not stored yet: upload it
    ├── RequestTimeout (408)       a request body that stopped arriving
    ├── Conflict (409)             e.g. a param logged again with another value
    ├── PayloadTooLarge (413)
    ├── UnsupportedMediaType (415) a body Plinth never parses: pickle above all
    ├── TooManyRequests (429)      e.g. too many failed logins
    ├── CorruptArtifact (500)      stored bytes no longer match their digest
    ├── MissingDependency (500)    an optional extra is not installed
    ├── ServiceUnavailable (503)   the server, its database or its object store cannot
    │                              be reached now: try again (answered with Retry-After)
    └── InsufficientStorage (507)  the disk under the database or the artifacts is full

The server turns any of these into a JSON response ``{"error": {"type", "message"}}``
with the class's status; the SDK turns such a response back into the same class, so
callers catch one type whether Plinth runs embedded or remote.
"""

from __future__ import annotations


class PlinthError(Exception):
    status_code = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(PlinthError):
    status_code = 400


class DigestMismatch(InvalidInput):
    pass


class Unprocessable(InvalidInput):
    status_code = 422


class Unauthenticated(PlinthError):
    status_code = 401


class PermissionDenied(PlinthError):
    status_code = 403


class NotFound(PlinthError):
    status_code = 404


class BlobMissing(NotFound):
    pass


class RequestTimeout(PlinthError):
    status_code = 408


class Conflict(PlinthError):
    status_code = 409


class PayloadTooLarge(PlinthError):
    status_code = 413


class UnsupportedMediaType(PlinthError):
    status_code = 415


class TooManyRequests(PlinthError):
    """``retry_after``: seconds after which the same request may well succeed (sent as
    ``Retry-After``; the SDK waits and sends an idempotent request again), or None when
    trying again soon is no use (too many failed logins)."""

    status_code = 429

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class CorruptArtifact(PlinthError):
    status_code = 500


class MissingDependency(PlinthError):
    status_code = 500

    def __init__(self, module: str, extra: str) -> None:
        super().__init__(f"{module} is not installed: pip install 'plinth[{extra}]'")


class ServiceUnavailable(PlinthError):
    status_code = 503


class InsufficientStorage(PlinthError):
    status_code = 507


_BY_NAME: dict[str, type[PlinthError]] = {}


def _collect(cls: type[PlinthError]) -> None:
    _BY_NAME[cls.__name__] = cls
    for sub in cls.__subclasses__():
        _collect(sub)


_collect(PlinthError)


def from_response(type_name: str, message: str, status: int) -> PlinthError:
    """Rebuild the error the server raised from its JSON body."""
    cls = _BY_NAME.get(type_name)
    if cls is None or cls is MissingDependency:
        err = PlinthError(message)
        err.status_code = status
        return err
    return cls(message)


def require(module: str, extra: str):
    """Import an optional dependency or raise an error naming the extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(module, extra) from exc
