"""The error tree of mlengine.

Every error a user can see is an :class:`MLEngineError`. The CLI turns them into one line on
stderr and an exit code; the server turns them into AI Platform's error envelope
(``{"error": {"code", "message", "status"}}``) with the HTTP status of :attr:`http_status`.

::

    MLEngineError
    ├── InvalidArgument (ValueError)        400 INVALID_ARGUMENT   exit 2
    ├── NotFound (KeyError)                 404 NOT_FOUND          exit 2
    ├── AlreadyExists                       409 ALREADY_EXISTS     exit 2
    ├── FailedPrecondition                  400 FAILED_PRECONDITION exit 2
    ├── PayloadTooLarge                     413 INVALID_ARGUMENT   exit 2
    ├── Unauthenticated                     401 UNAUTHENTICATED    exit 2
    ├── Unavailable                         503 UNAVAILABLE        exit 1
    │   └── StoreUnavailable                    (the metadata DB or artifact store)
    ├── OperationFailed                     500 INTERNAL           exit 1
    └── MissingDependency (ImportError)     500 FAILED_PRECONDITION exit 2
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "InvalidArgument",
    "MLEngineError",
    "MissingDependency",
    "NotFound",
    "OperationFailed",
    "PayloadTooLarge",
    "StoreUnavailable",
    "Unauthenticated",
    "Unavailable",
    "invalid_field",
]


class MLEngineError(Exception):
    """Root of every error mlengine raises on purpose."""

    http_status: int = 500
    grpc_status: str = "INTERNAL"
    exit_code: int = 1

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(MLEngineError, ValueError):
    """A request field, flag or file is malformed or out of range."""

    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    exit_code = 2


class NotFound(MLEngineError, KeyError):
    """The named resource does not exist."""

    http_status = 404
    grpc_status = "NOT_FOUND"
    exit_code = 2

    def __str__(self) -> str:  # KeyError would quote the message
        return self.message


class AlreadyExists(MLEngineError):
    """A resource with that name exists already."""

    http_status = 409
    grpc_status = "ALREADY_EXISTS"
    exit_code = 2


class FailedPrecondition(MLEngineError):
    """The resource is not in a state that allows the operation (e.g. cancel a finished job)."""

    http_status = 400
    grpc_status = "FAILED_PRECONDITION"
    exit_code = 2


class PayloadTooLarge(MLEngineError):
    """A request body is larger than the configured limit."""

    http_status = 413
    grpc_status = "INVALID_ARGUMENT"
    exit_code = 2


class Unauthenticated(MLEngineError):
    """The server wants a bearer token (``api_token``) that the request lacks or gets wrong."""

    http_status = 401
    grpc_status = "UNAUTHENTICATED"
    exit_code = 2


class Unavailable(MLEngineError):
    """A service mlengine needs does not answer (the API server, a database)."""

    http_status = 503
    grpc_status = "UNAVAILABLE"
    exit_code = 1


class StoreUnavailable(Unavailable):
    """The metadata database or the artifact store cannot be reached."""


class OperationFailed(MLEngineError):
    """An operation ran and failed (a job ended FAILED, a build broke)."""

    http_status = 500
    grpc_status = "INTERNAL"
    exit_code = 1


class MissingDependency(MLEngineError, ImportError):
    """An optional extra is needed and not installed; the message names the install command."""

    http_status = 500
    grpc_status = "FAILED_PRECONDITION"
    exit_code = 2


def invalid_field(field: str, owner: str, expected: str, got: object) -> InvalidArgument:
    """Build the one message template used for bad arguments across mlengine.

    Example: ``The 'maxTrials' field of HyperparameterSpec must be an integer >= 1. Got 0.``
    """
    return InvalidArgument(f"The '{field}' field of {owner} must be {expected}. Got {got!r}.")
