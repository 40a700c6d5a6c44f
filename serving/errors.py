"""Typed errors of the inference server; each carries its HTTP status, and `app.py` maps them in one place.

A handler or the batcher raises one of these; the error middleware turns it into `{"error": "..."}` with the
status and headers named here. Anything else that escapes a handler is a 500 naming the exception.
"""

from __future__ import annotations


class ServingError(Exception):
    """An error with a well-defined HTTP answer."""

    status: int = 500
    headers: dict[str, str] | None = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(ServingError):
    """The request body is not a valid recommendation request; the message names the problem."""

    status = 400


class PayloadTooLarge(ServingError):
    """The request body exceeds the server's size limit."""

    status = 413


class NotReady(ServingError):
    """The model is still loading or warming up, or the server is shutting down."""

    status = 503


class Overloaded(ServingError):
    """The batcher's queue is full: shed the request at once instead of letting latency grow without bound."""

    status = 503

    def __init__(self, message: str, *, retry_after_s: int = 1) -> None:
        super().__init__(message)
        self.headers = {"Retry-After": str(retry_after_s)}


class BatchFailed(ServingError):
    """Inference failed for the batch this request was in; only that batch's requests get this error."""

    status = 500
