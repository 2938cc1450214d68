"""Errors as TensorFlow names them (``weft.errors.UnavailableError``, ...).

Every failed host call raises a subclass of :class:`OpError` carrying the
host's message, which names what is at fault (an op, a variable, a device,
a task). A worker that lets one escape ends ``failed`` with it, as a Rust
worker returning the error does; any other exception traps the program
(its traceback on stderr), as a Rust panic does.
"""

from __future__ import annotations

from typing import Any


class OpError(Exception):
    """A host call failed; ``error_code`` is TensorFlow's status code name."""

    error_code: str = "unknown"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return f"{self.error_code}: {self.message}"


class InvalidArgumentError(OpError):
    """Something malformed: a bad op, dtype, shape or device string."""

    error_code = "invalid-argument"


class NotFoundError(OpError):
    """Something named does not exist: a node, a variable, a task."""

    error_code = "not-found"


class FailedPreconditionError(OpError):
    """Not possible yet, e.g. reading an uninitialized variable."""

    error_code = "failed-precondition"


class UnavailableError(OpError):
    """A task needed for the call is not reachable (the message names it)."""

    error_code = "unavailable"


class DeadlineExceededError(OpError):
    """The call's deadline passed before it finished."""

    error_code = "deadline-exceeded"


class AbortedError(OpError):
    """The call was aborted."""

    error_code = "aborted"


class ResourceExhaustedError(OpError):
    """A quota or limit was hit; the message names it."""

    error_code = "resource-exhausted"


class PermissionDeniedError(OpError):
    """The caller may not do this."""

    error_code = "permission-denied"


class UnimplementedError(OpError):
    """The host does not implement this."""

    error_code = "unimplemented"


class InternalError(OpError):
    """A bug in the host."""

    error_code = "internal"


_BY_CASE = {
    "Error_InvalidArgument": InvalidArgumentError,
    "Error_NotFound": NotFoundError,
    "Error_FailedPrecondition": FailedPreconditionError,
    "Error_Unavailable": UnavailableError,
    "Error_DeadlineExceeded": DeadlineExceededError,
    "Error_Aborted": AbortedError,
    "Error_ResourceExhausted": ResourceExhaustedError,
    "Error_PermissionDenied": PermissionDeniedError,
    "Error_Unimplemented": UnimplementedError,
    "Error_Internal": InternalError,
}


def from_wit(case: Any) -> OpError:
    """The exception for a WIT ``error`` case (``Error_Unavailable(value=...)``)."""
    kind = _BY_CASE.get(type(case).__name__, InternalError)
    return kind(str(getattr(case, "value", case)))


def to_wit(error: OpError) -> Any:
    """The WIT ``error`` case for an exception, to return from ``run``."""
    from wit_world.imports import types

    for case, kind in _BY_CASE.items():
        if type(error) is kind:
            return getattr(types, case)(error.message)
    return types.Error_Internal(error.message)
