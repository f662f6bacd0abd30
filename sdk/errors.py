"""Errors a host call can raise, one class per proxy-wasm status code.

Only status codes cross the ABI; the SDK turns each non-OK status back into a named
exception, so a plugin writes ``except NotFoundError:`` where a Go plugin compares against
``types.ErrorStatusNotFound``. This module is written in the compilable Python subset: the
compiler builds these same classes into every module, so ``except`` clauses behave the
same in CPython and in WebAssembly.
"""

from __future__ import annotations


class ProxyWasmError(Exception):
    """A host call answered with a status other than OK; ``status`` is its numeric code."""

    status: int

    def __init__(self, message: str = "", status: int = 10) -> None:
        super().__init__(message)
        self.status = status


class NotFoundError(ProxyWasmError):
    """Status 1: the header, property, key, queue or buffer does not exist (now)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 1)


class BadArgumentError(ProxyWasmError):
    """Status 2: the host rejected an argument (unknown map type, unknown cluster, ...)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 2)


class SerializationFailureError(ProxyWasmError):
    """Status 3: the host could not serialize the value asked for."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 3)


class ParseFailureError(ProxyWasmError):
    """Status 4: the host could not parse what the plugin passed."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 4)


class BadExpressionError(ProxyWasmError):
    """Status 5: an expression (CEL, property path) was invalid."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 5)


class InvalidMemoryAccessError(ProxyWasmError):
    """Status 6: the host could not read or write the plugin's memory."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 6)


class EmptyError(ProxyWasmError):
    """Status 7: the shared queue has nothing to dequeue."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 7)


class CasMismatchError(ProxyWasmError):
    """Status 8: shared data changed since it was read; read it again and retry."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 8)


class ResultMismatchError(ProxyWasmError):
    """Status 9: the result did not have the expected shape."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 9)


class InternalFailureError(ProxyWasmError):
    """Status 10: the host failed for its own reasons (or the call is not allowed now)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 10)


class BrokenConnectionError(ProxyWasmError):
    """Status 11: the connection or HTTP call behind the request was reset."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 11)


class UnimplementedError(ProxyWasmError):
    """Status 12: the host does not implement this call."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, 12)


def status_name(status: int) -> str:
    """The ABI spelling of a status code, as hosts print it in their logs."""
    names = [
        "OK",
        "NOT_FOUND",
        "BAD_ARGUMENT",
        "SERIALIZATION_FAILURE",
        "PARSE_FAILURE",
        "BAD_EXPRESSION",
        "INVALID_MEMORY_ACCESS",
        "EMPTY",
        "CAS_MISMATCH",
        "RESULT_MISMATCH",
        "INTERNAL_FAILURE",
        "BROKEN_CONNECTION",
        "UNIMPLEMENTED",
    ]
    if 0 <= status < len(names):
        return names[status]
    return f"STATUS_{status}"


def error_for_status(status: int, call: str) -> ProxyWasmError:
    """The exception for a non-OK ``status`` returned by host call ``call``."""
    message = f"{call}: {status_name(status)}"
    if status == 1:
        return NotFoundError(message)
    if status == 2:
        return BadArgumentError(message)
    if status == 3:
        return SerializationFailureError(message)
    if status == 4:
        return ParseFailureError(message)
    if status == 5:
        return BadExpressionError(message)
    if status == 6:
        return InvalidMemoryAccessError(message)
    if status == 7:
        return EmptyError(message)
    if status == 8:
        return CasMismatchError(message)
    if status == 9:
        return ResultMismatchError(message)
    if status == 11:
        return BrokenConnectionError(message)
    if status == 12:
        return UnimplementedError(message)
    return InternalFailureError(message)


__all__ = [
    "BadArgumentError",
    "BadExpressionError",
    "BrokenConnectionError",
    "CasMismatchError",
    "EmptyError",
    "InternalFailureError",
    "InvalidMemoryAccessError",
    "NotFoundError",
    "ParseFailureError",
    "ProxyWasmError",
    "ResultMismatchError",
    "SerializationFailureError",
    "UnimplementedError",
    "error_for_status",
    "status_name",
]
