"""The server's refusals: an NnreError carrying the HTTP status the client gets."""

from __future__ import annotations

from nnre.errors import NnreError


class RequestError(NnreError):
    """A request refused with a 4xx status and a message for the client (``param``: the
    field at fault, for OpenAI-style errors)."""

    code = "bad-request"

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.param = param


class NotFound(RequestError):
    code = "not-found"

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message, 404, param)


class Busy(RequestError):
    """Too much work queued already, or too many sessions: retry later (HTTP 429)."""

    code = "busy"

    def __init__(self, message: str) -> None:
        super().__init__(message, 429)
