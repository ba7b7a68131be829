"""The answers a client gets when serving refuses a request (``ServingError``: an HTTP status, a message and the
field at fault), and how those answers quote the client's own text.

The quoting lives here, not with the request checks, because every error message goes through it: a client's key
or value can end up in an answer, an SQS attribute or a log line. Imports nothing heavy: the light functions
(batch start) raise these errors too.
"""

from __future__ import annotations

import reprlib
from typing import Any

from mlops.core.errors import IntegrityError, MlopsError

_FIELD_CHARS = 200
_MESSAGE_CHARS = 1000


def printable(text: str) -> str:
    """``text`` with what a terminal, an SQS attribute or a strict JSON reader refuses (control characters, lone
    surrogates) written as escapes: a client's key or value can end up in an error message."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


_REPR = reprlib.Repr()
_REPR.maxstring, _REPR.maxother, _REPR.maxlong, _REPR.maxlevel = 60, 60, 40, 2


def shown(value: Any) -> str:
    """A client's value as an error message quotes it: shortened, so an answer never echoes a whole body back."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {len(str(abs(value)))} digits"
    return printable(_REPR.repr(value))


class ServingError(MlopsError):
    """An answer for the client: ``status`` is the HTTP status, ``field`` the part of the request at fault."""

    status = 400

    def __init__(self, message: str, field: str | None = None) -> None:
        message = printable(message)
        if len(message) > _MESSAGE_CHARS:  # a message quoting a client's value in full (batch URIs do) is cut short
            message = message[:_MESSAGE_CHARS - 13] + "… (shortened)"
        super().__init__(message)
        self.message = message
        # a field names a key the client chose: kept short and printable too
        self.field = None if field is None else printable(field)[:_FIELD_CHARS]

    def body(self) -> dict[str, Any]:
        return {"error": type(self).__name__, "message": self.message, "field": self.field}


class MalformedRequest(ServingError):
    status = 400


class InvalidInput(ServingError):
    status = 422


class PayloadTooLarge(ServingError):
    status = 413


class ModelNotFound(ServingError):
    status = 404


class NoModelDeployed(ServingError):
    status = 503


class UnverifiableModel(ServingError, IntegrityError):
    """A version whose artefacts cannot be verified against what the registry recorded: ours to fix, never served."""

    status = 500


class EntityNotFound(ServingError):
    status = 404


class FeaturesOutOfDate(ServingError):
    """The online features were computed by other definitions than the served model was trained with."""

    status = 409
