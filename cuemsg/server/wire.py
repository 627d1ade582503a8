"""Request bodies (msgspec Structs, validated on decode) and the rendering of
stored rows into the answer Structs of `cuemsg.server.answers`.

Routes cuemsg owns (fire, claim) forbid unknown fields, so a typo answers 422
instead of silently dropping data (docs/cueapi.md, Conventions).
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Annotated, Any, Literal, TypeVar, cast

import msgspec
from msgspec import Meta

from cuemsg.server import answers, timestamps
from cuemsg.server.answers import Callback, DateTime, OnFailure, Schedule
from cuemsg.server.errors import ApiProblem
from cuemsg.server.nesting import check_depth, too_deep
from cuemsg.server.storage.base import CueRow, ExecutionRow

Name = Annotated[str, Meta(min_length=1, max_length=255)]
WorkerId = Annotated[str, Meta(min_length=1, max_length=255)]
Text = Annotated[str, Meta(max_length=2000)]
Key = Annotated[str, Meta(min_length=1, max_length=256)]

# Integer fields take an integral float too (`40.0`), as JSON Schema's `integer`
# does: decoded as a float that must be a multiple of 1, documented as an
# integer; the handler turns it into an `int`.
_INTEGER = {"type": "integer"}
MaxAttempts = Annotated[float, Meta(ge=1, le=10, multiple_of=1, extra_json_schema=_INTEGER)]
Minutes = Annotated[float, Meta(ge=0, le=10**6, multiple_of=1, extra_json_schema=_INTEGER)]
ClaimLimit = Annotated[float, Meta(ge=1, le=100, multiple_of=1, extra_json_schema=_INTEGER)]


class Retry(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    max_attempts: MaxAttempts = 3
    backoff_minutes: list[Minutes] = msgspec.field(default_factory=lambda: [1, 5, 15])


class CueCreate(msgspec.Struct, kw_only=True):
    name: Name
    description: Text | None = None
    schedule: Schedule | None = None
    transport: Literal["webhook", "worker"] = "webhook"
    callback: Callback | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    retry: Retry | None = None
    on_failure: OnFailure | None = None


class CuePatch(msgspec.Struct, kw_only=True):
    name: Name | None = None
    description: Text | None = None
    status: Literal["active", "paused"] | None = None
    schedule: Schedule | None = None
    payload: dict[str, Any] | None = None
    retry: Retry | None = None
    callback: Callback | None = None
    on_failure: OnFailure | None = None


class FireBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    payload_override: dict[str, Any] | None = None
    merge_strategy: Literal["merge", "replace"] | None = None
    send_at: DateTime | None = None
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
    limit: ClaimLimit | None = None
    # `claim.settle`: outcomes of this worker's executions, recorded before claiming.
    settle: Annotated[list[BatchOutcomeItem], Meta(min_length=1, max_length=100)] | None = None


class OutcomeBody(msgspec.Struct, kw_only=True):
    success: bool
    result: Text | None = None
    error: Text | None = None
    metadata: dict[str, Any] | None = None


class OutcomeExtBody(OutcomeBody, kw_only=True):
    """An outcome that may carry the fire of its reply (the `outcome.reply` extension)."""

    reply: BatchFireItem | None = None


class BatchOutcomeItem(OutcomeBody, kw_only=True):
    execution_id: str


class BatchOutcome(msgspec.Struct):
    outcomes: Annotated[list[BatchOutcomeItem], Meta(min_length=1, max_length=100)]


class ReleaseBody(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """`POST /v1/executions/release` (extension `executions.release`)."""

    worker_id: WorkerId
    execution_ids: Annotated[list[Key], Meta(min_length=1, max_length=100)]


class WorkerHeartbeat(msgspec.Struct, kw_only=True):
    worker_id: WorkerId
    handlers: list[str] = msgspec.field(default_factory=list)


class Register(msgspec.Struct, kw_only=True):
    email: Annotated[
        str, Meta(min_length=3, max_length=320, pattern=r"^(?!.*\n)[^@ \t\r]+@[^@ \t\r]+$")
    ]


T = TypeVar("T")

_decoders: dict[type[Any], msgspec.json.Decoder[Any]] = {}
_AT = re.compile(r" - at `\$(.*)`$")
_NAMED = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def decode(body: bytes, type_: type[T]) -> T:
    """Decode and validate a request body; 422 naming the field on failure."""
    decoder = _decoders.get(type_)
    if decoder is None:
        decoder = _decoders[type_] = msgspec.json.Decoder(type_)
    if not body:  # no body at all is `{}`; blank bytes are not JSON and get 422
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


@lru_cache(maxsize=256)
def stamp(ts: float) -> str:
    """A time every row has (`created_at`, `scheduled_for`) as ISO 8601; cached, as
    the items of a batch share their times (its fires have one `now`)."""
    return cast(str, timestamps.render(ts))  # only None renders as None


def _as(value: Any, type_: Any) -> Any:
    """A stored JSON value as its answer type; None for a row an older version
    stored in a shape the answer no longer has (a listing must never fail on it)."""
    if value is None:
        return None
    try:
        return msgspec.convert(value, type_)
    except msgspec.ValidationError:
        return None


def cue_answer(cue: CueRow) -> answers.Cue:
    return answers.Cue(
        id=cue.id,
        name=cue.name,
        description=cue.description,
        status=cue.status,  # type: ignore[arg-type]  # stored as text, one of CueStatus
        transport=cue.transport,  # type: ignore[arg-type]
        schedule=_as(cue.schedule, Schedule),
        callback=_as(cue.callback, Callback),
        payload=cue.payload,
        retry=msgspec.convert(cue.retry, answers.RetryPolicy, strict=False),
        on_failure=_as(cue.on_failure, OnFailure),
        # 0 is "not computed yet" (a cue from before schedules ran): none to show.
        next_run=iso(cue.next_run or None),
        last_run=iso(cue.last_run),
        run_count=cue.run_count,
        fired_count=cue.fired_count,
        created_at=stamp(cue.created_at),
        updated_at=stamp(cue.updated_at),
    )


def fire_answer(e: ExecutionRow) -> answers.Fired:
    return answers.Fired(
        id=e.id,
        cue_id=e.cue_id,
        scheduled_for=stamp(e.scheduled_for),
        status=e.status,  # type: ignore[arg-type]  # stored as text, one of ExecutionStatus
        triggered_by=e.triggered_by,
    )


def execution_answer(e: ExecutionRow) -> answers.Execution:
    outcome = None
    if e.outcome is not None:
        outcome = answers.OutcomeInfo(
            success=e.outcome.success,
            result=e.outcome.result,
            error=e.outcome.error,
            metadata=e.outcome.metadata,
            recorded_at=iso(e.outcome.recorded_at),
            worker_id=e.outcome.worker_id,
        )
    return answers.Execution(
        id=e.id,
        cue_id=e.cue_id,
        status=e.status,  # type: ignore[arg-type]
        triggered_by=e.triggered_by,
        scheduled_for=stamp(e.scheduled_for),
        created_at=stamp(e.created_at),
        updated_at=stamp(e.updated_at),
        task=e.task,
        payload=e.payload,
        attempts=e.attempts,
        max_attempts=e.max_attempts,
        claimed_by_worker=e.claimed_by_worker,
        claimed_at=iso(e.claimed_at),
        lease_expires_at=iso(e.lease_expires_at),
        outcome=outcome,
        detail=e.detail,
        redriven_to=e.redriven_to,
        redrive_of=e.redrive_of,
    )


def claimable_answer(e: ExecutionRow) -> answers.Claimable:
    return answers.Claimable(
        execution_id=e.id,
        cue_id=e.cue_id,
        cue_name=e.cue_name,
        task=e.task,
        scheduled_for=stamp(e.scheduled_for),
        payload=e.payload,
        attempt=e.attempts,
    )


def claim_answer(e: ExecutionRow, lease_seconds: float, with_payload: bool) -> answers.Claimed:
    if not with_payload:
        return answers.Claimed(claimed=True, execution_id=e.id, lease_seconds=lease_seconds)
    return answers.Claimed(
        claimed=True,
        execution_id=e.id,
        lease_seconds=lease_seconds,
        cue_id=e.cue_id,
        task=e.task,
        payload=e.payload,
        attempt=e.attempts - 1,  # as the claimable list showed it, before this claim
        attempts=e.attempts,
        scheduled_for=stamp(e.scheduled_for),
    )
