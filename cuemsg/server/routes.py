"""The route table: `ROUTES`, one `Endpoint` per authenticated route (the
OpenAPI document is generated from it), and the wrappers that turn a handler
into a Starlette endpoint (count, authenticate, answer an `ApiProblem`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from cuemsg.server import wire
from cuemsg.server.errors import ApiProblem
from cuemsg.server.handlers.claims import claim, claim_next, heartbeat
from cuemsg.server.handlers.cues import create_cue, delete_cue, get_cue, list_cues, patch_cue
from cuemsg.server.handlers.events import events
from cuemsg.server.handlers.executions import get_execution, list_claimable, list_executions
from cuemsg.server.handlers.fire import fire, fire_batch
from cuemsg.server.handlers.outcomes import outcome, outcome_batch
from cuemsg.server.handlers.redrive import redrive
from cuemsg.server.handlers.webhook_secret import get_webhook_secret, regenerate_webhook_secret
from cuemsg.server.handlers.workers import list_workers, worker_heartbeat
from cuemsg.server.responses import problem
from cuemsg.server.state import Ctx, Handler, Server


@dataclass(frozen=True)
class Endpoint:
    """One route; the OpenAPI document is generated from the list of these."""

    path: str
    method: str
    handler: Handler
    summary: str
    body: type[Any] | None = None
    extension: str | None = None  # served only when this extension is on


ROUTES: list[Endpoint] = [
    Endpoint("/v1/cues", "POST", create_cue, "Create a cue", wire.CueCreate),
    Endpoint("/v1/cues", "GET", list_cues, "List cues"),
    Endpoint("/v1/cues/{cue_id}", "GET", get_cue, "Get a cue"),
    Endpoint("/v1/cues/{cue_id}", "PATCH", patch_cue, "Update, pause or resume", wire.CuePatch),
    Endpoint("/v1/cues/{cue_id}", "DELETE", delete_cue, "Delete a cue"),
    Endpoint("/v1/cues/{cue_id}/fire", "POST", fire, "Fire a cue", wire.FireBody),
    Endpoint("/v1/fire", "POST", fire_batch, "Fire many cues", wire.BatchFire, "fire.batch"),
    Endpoint("/v1/executions", "GET", list_executions, "List executions"),
    Endpoint("/v1/executions/claimable", "GET", list_claimable, "List claimable executions"),
    Endpoint("/v1/executions/claim", "POST", claim_next, "Claim the next", wire.ClaimNextExtBody),
    Endpoint(
        "/v1/executions/outcomes",
        "POST",
        outcome_batch,
        "Record many outcomes",
        wire.BatchOutcome,
        "outcome.batch",
    ),
    Endpoint("/v1/executions/{execution_id}", "GET", get_execution, "Get an execution"),
    Endpoint("/v1/executions/{execution_id}/claim", "POST", claim, "Claim one", wire.ClaimBody),
    Endpoint("/v1/executions/{execution_id}/heartbeat", "POST", heartbeat, "Extend the lease"),
    Endpoint(
        "/v1/executions/{execution_id}/outcome",
        "POST",
        outcome,
        "Record the outcome",
        wire.OutcomeBody,
    ),
    Endpoint(
        "/v1/worker/heartbeat", "POST", worker_heartbeat, "Register a worker", wire.WorkerHeartbeat
    ),
    Endpoint("/v1/workers", "GET", list_workers, "List workers", None, "workers.list"),
    Endpoint("/v1/auth/webhook-secret", "GET", get_webhook_secret, "Get the webhook secret"),
    Endpoint(
        "/v1/auth/webhook-secret/regenerate",
        "POST",
        regenerate_webhook_secret,
        "Regenerate the webhook secret (X-Confirm-Destructive: true)",
    ),
    Endpoint("/v1/events", "GET", events, "Stream events (SSE)", None, "events.stream"),
    Endpoint(
        "/v1/executions/{execution_id}/redrive",
        "POST",
        redrive,
        "Send a dead letter again",
        None,
        "executions.redrive",
    ),
]


def authed(server: Server, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
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
    server: Server, handler: Callable[[Request, Server], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        server.stats.requests += 1
        try:
            return await handler(request, server)
        except ApiProblem as p:
            return problem(p)

    return endpoint
