"""Errors that are the client's fault: they carry their HTTP status and never trigger a fallback."""

from __future__ import annotations


class RequestError(Exception):
    """A request the app refuses, with the HTTP status and OpenAI error type to answer with."""

    def __init__(self, status: int, message: str, code: str | None = None, param: str | None = None):
        super().__init__(status, message, code, param)
        self.status, self.message, self.code, self.param = status, message, code, param
        self.request_id: str | None = None  # the request log row's id, once the request has one

    def __str__(self) -> str:
        return self.message

    @property
    def error_type(self) -> str:
        return {401: "authentication_error", 404: "not_found_error", 503: "overloaded_error"}.get(
            self.status, "invalid_request_error"
        )
