"""JSON answers: a body encoded by msgspec, and an `ApiProblem` as its error body."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.responses import Response

from cuemsg.server.errors import ApiProblem

_json = msgspec.json.Encoder()


def ok(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status, media_type="application/json")


def problem(p: ApiProblem) -> Response:
    return Response(_json.encode(p.body()), p.status, p.headers, media_type="application/json")
