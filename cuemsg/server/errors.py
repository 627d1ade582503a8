"""Errors the server turns into CueAPI error bodies.

Storage backends raise `ApiProblem` too, so a conflict found deep in a
transaction reaches the client with the same code whichever backend found it.
"""

from __future__ import annotations

from cuemsg.server.answers import ErrorBody, ErrorDetail


class ApiProblem(Exception):
    """An answer of the form `{"error": {"code", "message", "status", "field"?}}`."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field
        self.headers = headers

    def detail(self) -> ErrorDetail:
        detail = ErrorDetail(code=self.code, message=self.message, status=self.status)
        if self.field is not None:
            detail.field = self.field
        return detail

    def body(self) -> ErrorBody:
        return ErrorBody(error=self.detail())


def cue_not_found(cue_id: str) -> ApiProblem:
    return ApiProblem(404, "cue_not_found", f"cue {cue_id!r} not found")


def execution_not_found(execution_id: str) -> ApiProblem:
    return ApiProblem(404, "execution_not_found", f"execution {execution_id!r} not found")


def not_claimable(execution_id: str) -> ApiProblem:
    return ApiProblem(409, "claim_failed", f"execution {execution_id!r} is not claimable")


def invalid(field: str, message: str) -> ApiProblem:
    return ApiProblem(422, "validation_error", f"{field}: {message}", field=field)
