"""Request bodies (msgspec Structs, validated on decode) and response rendering.

Routes cuemsg owns (fire, claim) forbid unknown fields, so a typo answers 422
instead of silently dropping data (docs/cueapi.md, Conventions).
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, TypeVar

import msgspec
from msgspec import Meta

from cuemsg.server import timestamps
from cuemsg.server.errors import ApiProblem
from cuemsg.server.nesting import check_depth, too_deep
from cuemsg.server.storage.base import CueRow, ExecutionRow

Name = Annotated[str, Meta(min_length=1, max_length=255)]
WorkerId = Annotated[str, Meta(min_length=1, max_length=255)]
Text = Annotated[str, Meta(max_length=2000)]
Key = Annotated[str, Meta(min_length=1, max_length=256)]


class Retry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_attempts: Annotated[int, Meta(ge=1, le=10)] = 3
    backoff_minutes: list[Annotated[int, Meta(ge=0)]] = msgspec.field(
        default_factory=lambda: [1, 5, 15]
    )


class OnFailure(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What runs when a webhook execution fails for good (`email` is accepted
    for the hosted service's sake; the local server sends no mail)."""

    email: bool = True
    webhook: str | None = None
    pause: bool = False


class CueCreate(msgspec.Struct, kw_only=True):
    name: Name
    description: Text | None = None
    schedule: dict[str, Any] | None = None
    transport: Literal["webhook", "worker"] = "webhook"
    callback: dict[str, Any] | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    retry: Retry | None = None
    on_failure: OnFailure | None = None


class CuePatch(msgspec.Struct, kw_only=True):
    name: Name | None = None
    description: Text | None = None
    status: Literal["active", "paused"] | None = None
    schedule: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None
    retry: Retry | None = None
    callback: dict[str, Any] | None = None
    on_failure: OnFailure | None = None


class FireBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    payload_override: dict[str, Any] | None = None
    merge_strategy: Literal["merge", "replace"] | None = None
    send_at: str | None = None
    idempotency_key: Key | None = None


class BatchFireItem(FireBody, forbid_unknown_fields=True, kw_only=True):
    cue_id: str


class BatchFire(msgspec.Struct, forbid_unknown_fields=True):
    fires: Annotated[list[BatchFireItem], Meta(min_length=1, max_length=100)]


class ClaimBody(msgspec.Struct, forbid_unknown_fields=True):
    worker_id: WorkerId


class ClaimNextBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """The plain claim-next body; `ClaimNextExtBody` adds the extensions' fields."""

    worker_id: WorkerId


class ClaimNextExtBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    worker_id: WorkerId
    task: str | None = None
    agent: str | None = None
    wait: Annotated[float, Meta(ge=0, le=30)] | None = None
    limit: Annotated[int, Meta(ge=1, le=100)] | None = None


class OutcomeBody(msgspec.Struct, kw_only=True):
    success: bool
    result: Text | None = None
    error: Text | None = None
    metadata: dict[str, Any] | None = None


class BatchOutcomeItem(OutcomeBody, kw_only=True):
    execution_id: str


class BatchOutcome(msgspec.Struct):
    outcomes: Annotated[list[BatchOutcomeItem], Meta(min_length=1, max_length=100)]


class WorkerHeartbeat(msgspec.Struct, kw_only=True):
    worker_id: WorkerId
    handlers: list[str] = msgspec.field(default_factory=list)


class Register(msgspec.Struct, kw_only=True):
    email: Annotated[str, Meta(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")]


T = TypeVar("T")

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r" - at `\$(.*)`$")
_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def decode(body: bytes, type_: type[T]) -> T:
    """Decode and validate a request body; 422 naming the field on failure."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    if not body.strip():
        body = b"{}"
    check_depth(body)
    try:
        return decoder.decode(body)  # type: ignore[no-any-return]
    except RecursionError:  # deeper than the stack allows, whatever check_depth let by
        raise too_deep() from None
    except msgspec.ValidationError as exc:
        raise _validation_problem(str(exc)) from None
    except msgspec.DecodeError as exc:
        raise ApiProblem(422, "validation_error", f"body is not valid JSON: {exc}") from None


def _validation_problem(text: str) -> ApiProblem:
    path = ""
    match = _AT.search(text)
    if match:
        path = match.group(1)
        text = text[: match.start()]
    named = _NAMED.search(text)
    if named:
        path = f"{path}.{named.group(1)}"
    # `$.fires[0].cue_id` -> `fires[0].cue_id`
    field = path.lstrip(".") or None
    message = f"{field}: {text}" if field else text
    return ApiProblem(422, "validation_error", message, field=field)


def parse_time(value: str, field: str) -> float:
    """ISO 8601 to UNIX seconds, range-checked (see `cuemsg.server.timestamps`)."""
    return timestamps.parse_time(value, field)


def iso(ts: float | None) -> str | None:
    return timestamps.render(ts)


def cue_json(cue: CueRow) -> dict[str, Any]:
    return {
        "id": cue.id,
        "name": cue.name,
        "description": cue.description,
        "status": cue.status,
        "transport": cue.transport,
        "schedule": cue.schedule,
        "callback": cue.callback,
        "payload": cue.payload,
        "retry": cue.retry,
        "on_failure": cue.on_failure,
        # 0 is "not computed yet" (a cue from before schedules ran): none to show.
        "next_run": iso(cue.next_run or None),
        "last_run": iso(cue.last_run),
        "run_count": cue.run_count,
        "fired_count": cue.fired_count,
        "created_at": iso(cue.created_at),
        "updated_at": iso(cue.updated_at),
    }


def fire_json(e: ExecutionRow) -> dict[str, Any]:
    return {
        "id": e.id,
        "cue_id": e.cue_id,
        "scheduled_for": iso(e.scheduled_for),
        "status": e.status,
        "triggered_by": e.triggered_by,
    }


def execution_json(e: ExecutionRow) -> dict[str, Any]:
    outcome = None
    if e.outcome is not None:
        outcome = {
            "success": e.outcome.success,
            "result": e.outcome.result,
            "error": e.outcome.error,
            "metadata": e.outcome.metadata,
            "recorded_at": iso(e.outcome.recorded_at),
            "worker_id": e.outcome.worker_id,
        }
    return {
        "id": e.id,
        "cue_id": e.cue_id,
        "status": e.status,
        "triggered_by": e.triggered_by,
        "scheduled_for": iso(e.scheduled_for),
        "created_at": iso(e.created_at),
        "updated_at": iso(e.updated_at),
        "task": e.task,
        "payload": e.payload,
        "attempts": e.attempts,
        "max_attempts": e.max_attempts,
        "claimed_by_worker": e.claimed_by_worker,
        "claimed_at": iso(e.claimed_at),
        "lease_expires_at": iso(e.lease_expires_at),
        "outcome": outcome,
        "detail": e.detail,
        "redriven_to": e.redriven_to,
        "redrive_of": e.redrive_of,
    }


def claimable_json(e: ExecutionRow) -> dict[str, Any]:
    return {
        "execution_id": e.id,
        "cue_id": e.cue_id,
        "cue_name": e.cue_name,
        "task": e.task,
        "scheduled_for": iso(e.scheduled_for),
        "payload": e.payload,
        "attempt": e.attempts,
    }


def claim_json(e: ExecutionRow, lease_seconds: float, with_payload: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"claimed": True, "execution_id": e.id, "lease_seconds": lease_seconds}
    if with_payload:
        out.update(
            cue_id=e.cue_id,
            task=e.task,
            payload=e.payload,
            attempt=e.attempts - 1,  # as the claimable list showed it, before this claim
            attempts=e.attempts,
            scheduled_for=iso(e.scheduled_for),
        )
    return out
