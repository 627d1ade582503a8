"""Typed bodies of the CueAPI routes cuemsg uses (see docs/cueapi.md).

Every answer model is a frozen msgspec Struct decoded leniently: unknown
keys are ignored, numbers given as strings are accepted, and the decoded
JSON object stays reachable as `.raw`, so a field that the hosted service
adds later can be read before this module knows about it.

Timestamps are kept as the ISO 8601 strings the server sent (`str`), never
parsed: they compare and sort correctly as long as the server writes UTC
with one format, they survive a round trip unchanged, and a caller who
wants a `datetime` calls `datetime.fromisoformat(...)`.

`FireRequest` and `OutcomeRequest` are inputs (for `fire_many` and
`report_outcomes`); they are Structs too so they encode without copying.
"""

from __future__ import annotations

from datetime import datetime
from types import UnionType
from typing import Any, TypeVar, Union, get_args, get_origin, get_type_hints

import msgspec

from cuemsg._exceptions import CueAPIError

__all__ = [
    "ClaimResult",
    "Claimable",
    "Claimed",
    "Cue",
    "CueList",
    "Execution",
    "ExecutionList",
    "FireRequest",
    "FireResult",
    "Heartbeat",
    "Info",
    "OutcomeRequest",
    "OutcomeResult",
    "Worker",
    "WorkerHeartbeat",
]

JSONObject = dict[str, Any]

_M = TypeVar("_M", bound="Model")


class Model(msgspec.Struct, frozen=True, kw_only=True, dict=True):
    """Base of the answer models: a frozen Struct that keeps its raw JSON object.

    Equality and `msgspec.json.encode` look at the declared fields only, so
    two answers that differ in a field this module does not know still
    compare equal.
    """

    @property
    def raw(self) -> JSONObject:
        """The JSON object this model was decoded from (empty if built by hand)."""
        raw: JSONObject = self.__dict__.get("_raw", {})
        return raw


def decode_model(data: Any, model: type[_M]) -> _M:
    """Convert decoded JSON (builtins) into `model`, keeping `.raw` on every Model inside.

    Raises:
        msgspec.ValidationError: `data` does not fit `model`.
    """
    obj = msgspec.convert(data, model, strict=False)
    _attach_raw(obj, data)
    return obj


def _attach_raw(obj: Any, data: Any) -> None:
    # Only models and lists can hold a model: other values (most fields) are not visited.
    if isinstance(obj, Model) and isinstance(data, dict):
        obj.__dict__["_raw"] = data
        for name, wire in _model_fields(type(obj)):
            value = getattr(obj, name)
            if isinstance(value, (Model, list)):
                _attach_raw(value, data.get(wire))
    elif isinstance(obj, list) and isinstance(data, list):
        for item, item_data in zip(obj, data, strict=False):
            if isinstance(item, (Model, list)):
                _attach_raw(item, item_data)


_MODEL_FIELDS: dict[type[Any], tuple[tuple[str, str], ...]] = {}


def _model_fields(cls: type[Model]) -> tuple[tuple[str, str], ...]:
    """(name, JSON key) of the fields of `cls` whose type can hold a model, found once
    per class: a claim of 50 then visits none of its fields (`msgspec.convert` puts
    plain JSON in every other field, never a model)."""
    fields = _MODEL_FIELDS.get(cls)
    if fields is None:
        hints = get_type_hints(cls)
        fields = tuple(
            (name, wire)
            for name, wire in zip(cls.__struct_fields__, cls.__struct_encode_fields__, strict=True)
            if _holds_model(hints[name])
        )
        _MODEL_FIELDS[cls] = fields
    return fields


def _holds_model(hint: Any) -> bool:
    # The origin first: on Python 3.10 `isinstance(list[Cue], type)` is True.
    if get_origin(hint) in (list, Union, UnionType):
        return any(_holds_model(arg) for arg in get_args(hint))
    return isinstance(hint, type) and issubclass(hint, Model)


# -- cues ---------------------------------------------------------------------------------


class Cue(Model, frozen=True, kw_only=True):
    """A cue: a named job that fires into executions (`POST /v1/cues`)."""

    id: str
    name: str = ""
    description: str | None = None
    status: str = "active"
    transport: str = "worker"
    schedule: JSONObject | None = None
    callback: JSONObject | None = None
    payload: JSONObject = msgspec.field(default_factory=dict)
    retry: JSONObject | None = None
    next_run: str | None = None
    last_run: str | None = None
    run_count: int = 0
    fired_count: int = 0
    created_at: str | None = None
    updated_at: str | None = None


class CueList(Model, frozen=True, kw_only=True):
    """One page of `GET /v1/cues`."""

    cues: list[Cue] = msgspec.field(default_factory=list)
    total: int = 0
    limit: int | None = None
    offset: int | None = None


class FireResult(Model, frozen=True, kw_only=True):
    """The execution a fire made (or, for a repeated idempotency key, made before)."""

    id: str
    cue_id: str | None = None
    scheduled_for: str | None = None
    status: str = "pending"
    triggered_by: str | None = None

    @property
    def execution_id(self) -> str:
        """The execution's id (an alias of `id`)."""
        return self.id


#: In an outcome reported with `reply=` (extension `outcome.reply`), this token
#: stands for the reply's execution id; the server writes the id in its place.
REPLY_TOKEN = "{reply_execution_id}"


class FireRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One fire for `cues.fire_many`: the same fields as `cues.fire`.

    `send_at` accepts what `cues.fire` accepts: a `datetime`, an ISO 8601
    string or UNIX seconds.
    """

    cue_id: str
    payload_override: JSONObject | None = None
    merge_strategy: str | None = None
    send_at: datetime | str | float | None = None
    idempotency_key: str | None = None


# -- executions ---------------------------------------------------------------------------


class Execution(Model, frozen=True, kw_only=True):
    """One execution (`GET /v1/executions/{id}`).

    `payload`, `attempts`, `claimed_by_worker` and `outcome` are filled by
    the embedded server; the hosted service may leave some of them out.
    """

    id: str
    cue_id: str | None = None
    status: str = ""
    scheduled_for: str | None = None
    payload: JSONObject | None = None
    attempts: int = 0
    claimed_by_worker: str | None = None
    outcome: JSONObject | None = None
    triggered_by: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    redriven_to: str | None = None
    redrive_of: str | None = None

    @property
    def task(self) -> str | None:
        """The routing `task` of the effective payload, if it is a string."""
        return _task_of(self.payload)


class ExecutionList(Model, frozen=True, kw_only=True):
    """One page of `GET /v1/executions`."""

    executions: list[Execution] = msgspec.field(default_factory=list)
    total: int = 0
    limit: int | None = None
    offset: int | None = None


class Claimable(Model, frozen=True, kw_only=True):
    """One row of `GET /v1/executions/claimable` (`attempt`: claims so far, 0 at first)."""

    execution_id: str
    cue_id: str | None = None
    cue_name: str | None = None
    task: str | None = None
    scheduled_for: str | None = None
    payload: JSONObject = msgspec.field(default_factory=dict)
    attempt: int = 0


class Claimed(Model, frozen=True, kw_only=True):
    """An execution this worker now holds under a lease.

    `claim_next` fills every field, whichever path it took. A bare `claim`
    on a server without `claim.payload` fills only `execution_id` and
    `lease_seconds` (the rest stays None). `attempts` counts the claims of
    this execution including this one (1 on a first delivery).
    """

    execution_id: str
    lease_seconds: float | None = None
    cue_id: str | None = None
    task: str | None = None
    payload: JSONObject | None = None
    attempts: int | None = None
    scheduled_for: str | None = None


class ClaimResult(Model, frozen=True, kw_only=True):
    """The answer of `claim_next`: what was claimed, or why nothing was.

    Attributes:
        claimed: True when `executions` holds at least one execution.
        executions: the claimed executions, oldest first.
        reason: when nothing was claimed, `"no_executions_for_task"` (a task
            filter was given) or `"no_executions"`.
        task: the task filter of the call (None when there was none).
        settled: with `settle=` (`claim.settle`), the result of each outcome
            recorded before the claim, in order: an `OutcomeResult`, or the
            `CueAPIError` that item got.
    """

    claimed: bool
    executions: list[Claimed] = msgspec.field(default_factory=list)
    reason: str | None = None
    task: str | None = None
    settled: list[OutcomeResult | CueAPIError] = msgspec.field(default_factory=list)

    @property
    def execution(self) -> Claimed | None:
        """The first (oldest) claimed execution, or None."""
        return self.executions[0] if self.executions else None


class Heartbeat(Model, frozen=True, kw_only=True):
    """The answer of an execution heartbeat: the lease now ends at `lease_extended_until`."""

    execution_id: str
    lease_extended_until: str | None = None
    acknowledged: bool = True


class OutcomeRequest(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One outcome for `executions.report_outcomes`."""

    execution_id: str
    success: bool
    result: str | None = None
    error: str | None = None
    metadata: JSONObject | None = None


class OutcomeResult(Model, frozen=True, kw_only=True):
    """The answer of an outcome report (`reply`: the reply it fired, `outcome.reply`)."""

    execution_id: str
    outcome_recorded: bool = True
    outcome_state: str | None = None
    reply: FireResult | None = None


# -- workers and discovery ----------------------------------------------------------------


class WorkerHeartbeat(Model, frozen=True, kw_only=True):
    """The answer of `POST /v1/worker/heartbeat`."""

    acknowledged: bool = True
    server_time: str | None = None


class Worker(Model, frozen=True, kw_only=True):
    """A worker daemon that heartbeated (`GET /v1/workers`, extension `workers.list`)."""

    worker_id: str
    handlers: list[str] = msgspec.field(default_factory=list)
    last_heartbeat: str | None = None


class Redriven(Model, frozen=True, kw_only=True):
    """`POST /v1/executions/{id}/redrive` (extension `executions.redrive`).

    `redriven` is False when an earlier redrive already sent this dead letter
    again: `redriven_to` is then the execution that one made.
    """

    execution_id: str
    redriven_to: str
    redriven: bool


class Released(Model, frozen=True, kw_only=True):
    """One execution handed back by `POST /v1/executions/release` (extension
    `executions.release`): pending again, its attempt not counted."""

    execution_id: str
    released: bool = True


class Info(Model, frozen=True, kw_only=True):
    """`GET /v1/info`: the server's version and the extensions it serves."""

    version: str | None = None
    extensions: list[str] = msgspec.field(default_factory=list)


def _task_of(payload: JSONObject | None) -> str | None:
    task = (payload or {}).get("task")
    return task if isinstance(task, str) else None
