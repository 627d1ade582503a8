"""The last line of error handling: an ASGI middleware that answers any exception
a handler let through with a CueAPI error body, logs it once, and keeps the
connection.

Starlette's own catch-all answers a 500 and then re-raises, so uvicorn logs
the error a second time and closes the keep-alive connection: a pooled
client's next request on it fails. Here the answer is the end of it.

What an exception becomes:
- `StorageFull`: 507 `storage_full` with `Retry-After` (writes fail until
  space is freed; reads go on working);
- any other `StorageError` (e.g. PostgreSQL restarting): 503
  `storage_unavailable` with `Retry-After`;
- anything else: 500 `internal_error`, logged with its traceback.
"""

from __future__ import annotations

import logging

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cuemsg._exceptions import StorageError, StorageFull
from cuemsg.server.errors import ApiProblem
from cuemsg.server.responses import problem

__all__ = [
    "FULL_RETRY_AFTER",
    "UNAVAILABLE_RETRY_AFTER",
    "ErrorGuard",
    "answer_exception",
    "problem_for",
]

log = logging.getLogger("cuemsg.server")

#: Seconds a client is asked to wait after a full disk (space takes an operator).
FULL_RETRY_AFTER = 30
#: Seconds a client is asked to wait after the database failed (e.g. a restart).
UNAVAILABLE_RETRY_AFTER = 1


def problem_for(exc: Exception) -> ApiProblem:
    """The error answer for an exception no handler turned into one."""
    if isinstance(exc, StorageFull):
        return ApiProblem(
            507,
            "storage_full",
            f"the storage is full, so nothing can be written: {exc} "
            "(reads still work; retry once space is freed)",
            headers={"Retry-After": str(FULL_RETRY_AFTER)},
        )
    if isinstance(exc, StorageError):
        return ApiProblem(
            503,
            "storage_unavailable",
            f"the storage is unavailable, retry shortly: {exc}",
            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
        )
    return ApiProblem(500, "internal_error", f"internal error: {type(exc).__name__}")


def answer_exception(exc: Exception, scope: Scope) -> Response:
    """The answer to an exception no handler answered, logged once (the guard's and the
    hot lane's: `lane.py`)."""
    answer = problem_for(exc)
    where = f"{scope.get('method', '?')} {scope.get('path', '?')}"
    if answer.status == 500:
        log.exception("unhandled error on %s", where)
    else:
        log.warning("%s on %s: %s", answer.code, where, exc)
    return problem(answer)


class ErrorGuard:
    """Wraps the app (inside Starlette's error middleware) and answers its exceptions."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            if started:
                raise  # half an answer is out: only closing the connection can end it
            await answer_exception(exc, scope)(scope, receive, send)
