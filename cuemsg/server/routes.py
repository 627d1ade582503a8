"""The route table: `ROUTES`, one `Endpoint` per authenticated route, and
`OPEN_ROUTES`, those that need no key; the OpenAPI document is generated from
them (bodies, answers, statuses, parameters). Also the wrappers that turn a
handler into a Starlette endpoint (count, authenticate, answer an `ApiProblem`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, get_args

from starlette.requests import Request
from starlette.responses import Response

from cuemsg.server import answers, wire
from cuemsg.server.errors import ApiProblem
from cuemsg.server.handlers.auth import register
from cuemsg.server.handlers.claims import claim, claim_next, heartbeat
from cuemsg.server.handlers.cues import create_cue, delete_cue, get_cue, list_cues, patch_cue
from cuemsg.server.handlers.discovery import health, info, openapi
from cuemsg.server.handlers.events import events
from cuemsg.server.handlers.executions import get_execution, list_claimable, list_executions
from cuemsg.server.handlers.fire import fire, fire_batch
from cuemsg.server.handlers.outcomes import outcome, outcome_batch
from cuemsg.server.handlers.redrive import redrive
from cuemsg.server.handlers.release import release
from cuemsg.server.handlers.webhook_secret import get_webhook_secret, regenerate_webhook_secret
from cuemsg.server.handlers.workers import list_workers, worker_heartbeat
from cuemsg.server.responses import problem
from cuemsg.server.state import Ctx, Server


@dataclass(frozen=True)
class Param:
    """A query or header parameter, as the OpenAPI document shows it."""

    name: str
    schema: dict[str, Any]
    where: str = "query"
    description: str = ""
    required: bool = False


@dataclass(frozen=True)
class Endpoint:
    """One route; the OpenAPI document is generated from the lists of these.

    `answer` is the Struct of the success body (a tuple: one of these), `errors`
    the statuses beyond those every route can answer (`openapi.py` adds 401 and
    429 when `auth`, and 413 and 422 when there is a body).
    """

    path: str
    method: str
    handler: Callable[..., Awaitable[Response]]
    summary: str
    body: type[Any] | None = None
    extension: str | None = None  # served only when this extension is on
    answer: type[Any] | tuple[type[Any], ...] | None = None
    status: int = 200
    errors: tuple[int, ...] = ()
    params: tuple[Param, ...] = ()
    auth: bool = True


_INT = "integer"
EVENT_PARAMS = (
    Param("cue_id", {"type": "string"}, description="only this cue's executions"),
    Param("thread", {"type": "string"}, description="only messages of this thread"),
    Param(
        "last_event_id",
        {"type": "string", "pattern": "^[0-9]+$"},
        description="resume after this event id (0: everything on record)",
    ),
    Param(
        "Last-Event-ID",
        {"type": "string", "pattern": "^[0-9]+$"},
        "header",
        "resume after this event id (wins over last_event_id)",
    ),
)
LIMIT = Param("limit", {"type": _INT, "minimum": 1, "maximum": 1000, "default": 50})
OFFSET = Param("offset", {"type": _INT, "minimum": 0, "maximum": 10**9, "default": 0})
WORKER = Param(
    "X-Worker-Id",
    {"type": "string"},
    "header",
    "The caller's worker id; when sent, the lease must be this worker's (403 otherwise).",
)

CONFIRM = Param(
    "X-Confirm-Destructive",
    {"type": "string", "pattern": "^[Tt][Rr][Uu][Ee]$"},
    "header",
    "Must be `true`: the current secret stops working (400 `confirmation_required` otherwise).",
    required=True,
)


def _enum(values: Any) -> dict[str, Any]:
    return {"type": "string", "enum": list(get_args(values))}


# fmt: off
ROUTES: list[Endpoint] = [
    Endpoint(
        "/v1/cues", "POST", create_cue, "Create a cue", wire.CueCreate,
        answer=answers.Cue, status=201, errors=(409,),
    ),
    Endpoint(
        "/v1/cues", "GET", list_cues, "List cues", answer=answers.CuePage, errors=(422,),
        params=(Param("status", _enum(answers.CueStatus)), LIMIT, OFFSET),
    ),
    Endpoint("/v1/cues/{cue_id}", "GET", get_cue, "Get a cue", answer=answers.Cue, errors=(404,)),
    Endpoint(
        "/v1/cues/{cue_id}", "PATCH", patch_cue, "Update, pause or resume", wire.CuePatch,
        answer=answers.Cue, errors=(404, 409),
    ),
    Endpoint("/v1/cues/{cue_id}", "DELETE", delete_cue, "Delete a cue", status=204, errors=(404,)),
    Endpoint(
        "/v1/cues/{cue_id}/fire", "POST", fire, "Fire a cue", wire.FireBody,
        answer=answers.Fired, errors=(404, 409),
    ),
    Endpoint(
        "/v1/fire", "POST", fire_batch, "Fire many cues", wire.BatchFire, "fire.batch",
        answer=answers.FiredMany, errors=(404, 409),
    ),
    Endpoint(
        "/v1/executions", "GET", list_executions, "List executions",
        answer=answers.ExecutionPage, errors=(422,),
        params=(
            Param("cue_id", {"type": "string"}),
            Param("status", _enum(answers.ExecutionStatus)),
            LIMIT,
            OFFSET,
        ),
    ),
    Endpoint(
        "/v1/executions/claimable", "GET", list_claimable, "List claimable executions",
        answer=answers.ClaimableList,
        params=(
            Param("task", {"type": "string"}, description="only executions with this task"),
            Param("agent", {"type": "string"}, description="only executions with this agent"),
        ),
    ),
    Endpoint(
        "/v1/executions/claim", "POST", claim_next, "Claim the next", wire.ClaimNextExtBody,
        answer=(answers.Claimed, answers.ClaimedMany), errors=(409,),
    ),
    Endpoint(
        "/v1/executions/outcomes", "POST", outcome_batch, "Record many outcomes",
        wire.BatchOutcome, "outcome.batch", answer=answers.OutcomeResults, params=(WORKER,),
    ),
    # Before /v1/executions/{execution_id}: that would match its path first.
    Endpoint(
        "/v1/executions/release", "POST", release, "Hand claimed executions back",
        wire.ReleaseBody, "executions.release", answer=answers.ReleaseResults,
    ),
    Endpoint(
        "/v1/executions/{execution_id}", "GET", get_execution, "Get an execution",
        answer=answers.Execution, errors=(404,),
    ),
    Endpoint(
        "/v1/executions/{execution_id}/claim", "POST", claim, "Claim one", wire.ClaimBody,
        answer=answers.Claimed, errors=(404, 409),
    ),
    Endpoint(
        "/v1/executions/{execution_id}/heartbeat", "POST", heartbeat, "Extend the lease",
        answer=answers.LeaseExtended, errors=(403, 404, 409), params=(WORKER,),
    ),
    Endpoint(
        "/v1/executions/{execution_id}/outcome", "POST", outcome, "Record the outcome",
        wire.OutcomeExtBody, answer=answers.OutcomeRecorded, errors=(403, 404, 409),
        params=(WORKER,),
    ),
    Endpoint(
        "/v1/worker/heartbeat", "POST", worker_heartbeat, "Register a worker",
        wire.WorkerHeartbeat, answer=answers.WorkerAck,
    ),
    Endpoint(
        "/v1/workers", "GET", list_workers, "List workers", None, "workers.list",
        answer=answers.WorkerList,
    ),
    Endpoint(
        "/v1/auth/webhook-secret", "GET", get_webhook_secret, "Get the webhook secret",
        answer=answers.WebhookSecret,
    ),
    Endpoint(
        "/v1/auth/webhook-secret/regenerate", "POST", regenerate_webhook_secret,
        "Regenerate the webhook secret (X-Confirm-Destructive: true)",
        answer=answers.WebhookSecret, errors=(400,), params=(CONFIRM,),
    ),
    Endpoint(
        "/v1/events", "GET", events, "Stream events (Server-Sent Events; docs/cueapi.md)",
        None, "events.stream", errors=(422,), params=EVENT_PARAMS,
    ),
    Endpoint(
        "/v1/executions/{execution_id}/redrive", "POST", redrive, "Send a dead letter again",
        None, "executions.redrive", answer=answers.Redriven, errors=(404, 409),
    ),
]

#: The routes that need no key; their handlers take `(request, server)`.
OPEN_ROUTES: list[Endpoint] = [
    Endpoint(
        "/v1/info", "GET", info, "Server version and extensions", answer=answers.Info, auth=False
    ),
    Endpoint(
        "/v1/auth/register", "POST", register, "Create a tenant and its API key", wire.Register,
        answer=answers.Registered, status=201, errors=(403, 429), auth=False,
    ),
    Endpoint("/health", "GET", health, "Liveness and counters", answer=answers.Health, auth=False),
    Endpoint("/openapi.json", "GET", openapi, "This document", auth=False),
]
# fmt: on


def authed(
    server: Server, handler: Callable[..., Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        server.stats.requests += 1
        try:
            tenant = await server.authenticate(request)
            return await handler(Ctx(request, tenant, server))
        except ApiProblem as p:
            return problem(p)
        finally:
            if request.method != "GET":
                server.feed.bump()  # it may have changed an execution: streams look

    return endpoint


def public(
    server: Server, handler: Callable[..., Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        server.stats.requests += 1
        try:
            return await handler(request, server)
        except ApiProblem as p:
            return problem(p)

    return endpoint
