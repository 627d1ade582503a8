"""The server's answers as msgspec Structs, and the value types requests share.

Every JSON body the server sends is one of these Structs (built in
`cuemsg.server.wire`, encoded in `cuemsg.server.responses`), and the OpenAPI
document takes its response schemas from the same classes, so the document
cannot drift from what is served. A field that is present only sometimes
(the `claim.payload` fields, an error's `field`) defaults to `UNSET`, which
msgspec leaves out of the JSON and out of the schema's `required`.

`Schedule` (a union tagged by `type`), `Callback`, `OnFailure` and `DateTime`
are used by the request bodies too (`cuemsg.server.wire`), so a cue answers with the very
shapes it was created with.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal
from zoneinfo import available_timezones

import msgspec
from msgspec import UNSET, Meta, UnsetType

#: An ISO 8601 timestamp with an offset (answers are always UTC).
DateTime = Annotated[str, Meta(extra_json_schema={"format": "date-time"})]

#: The states of an execution (CUEAPI.md); `storage.base.EXECUTION_STATES` in order.
ExecutionStatus = Literal["pending", "retry_ready", "delivering", "success", "failed", "missed"]
# `completed` / `failed`: a `once` cue after its scheduled run (as the hosted service marks it)
CueStatus = Literal["active", "paused", "completed", "failed"]


#: An IANA time zone name (checked by `schedules.py`; the document lists them).
TimeZone = Annotated[
    str,
    Meta(
        extra_json_schema={"enum": sorted(available_timezones())} if available_timezones() else {}
    ),
]


class ScheduleOnce(msgspec.Struct, tag_field="type", tag="once", kw_only=True):
    """Fire once, at `at`."""

    at: DateTime
    timezone: TimeZone | UnsetType = UNSET


class ScheduleRecurring(msgspec.Struct, tag_field="type", tag="recurring", kw_only=True):
    """Fire on a 5-field cron expression, read in `timezone`."""

    # Five fields of cron characters (the shortest fit is a valid expression),
    # then `schedules.py` checks the expression (`format: cron` in the document).
    # The patterns here and in `wire` read the same in JSON Schema (ECMA) and in
    # Python: no `\s` (the two differ on what space is), and `(?!.*\n)` as
    # Python's `$` also matches before a final newline.
    cron: Annotated[
        str,
        Meta(
            pattern=r"^(?!.*\n)[ \t]*"
            r"[*0-9,/-]+[ \t]+"  # minute
            r"[*0-9,/-]+[ \t]+"  # hour
            r"[*?1-9L][*?0-9,/LW-]*[ \t]+"  # day of month
            r"[*1-9A-Za-z][*0-9A-Za-z,/-]*[ \t]+"  # month
            r"[*?0-9A-Za-z][*?0-9A-Za-z,/#L-]*[ \t]*$",  # day of week
            extra_json_schema={"format": "cron"},
        ),
    ]
    timezone: TimeZone = "UTC"


Schedule = ScheduleOnce | ScheduleRecurring


# An IPv6 literal's shape (groups of hex, an IPv4 tail); the URL parser checks the rest.
_IPV6 = r"\[[0-9A-Fa-f]{0,4}(:[0-9A-Fa-f]{0,4}){1,6}:[0-9A-Fa-f.]{0,15}\]"
_PORT = r"(6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[0-9]{1,4})"
#: http(s), a host (a name, an IPv4 address or a bracketed IPv6 one; a port up to
#: 65535) and printable ASCII after it. The SSRF guard (`ssrf.py`) also checks the
#: IPv6 literal and where the host resolves to.
WebhookUrl = Annotated[
    str,
    Meta(
        pattern=rf"^(?!.*\n)https?://({_IPV6}|[A-Za-z0-9._~-]+)(:{_PORT})?([/?#][!-~]*)?$",
        max_length=2048,
    ),
]


class Callback(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Where a webhook cue delivers its executions."""

    url: WebhookUrl
    method: Literal["POST", "PUT", "PATCH"] = "POST"
    headers: dict[str, str] = msgspec.field(default_factory=dict)


class OnFailure(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """What runs when a webhook execution fails for good (`email` is accepted
    for the hosted service's sake; the local server sends no mail)."""

    email: bool = True
    webhook: WebhookUrl | None = None
    pause: bool = False


class ErrorDetail(msgspec.Struct, kw_only=True):
    code: str
    message: str
    status: int
    field: str | UnsetType = UNSET  # the embedded server names the offending field


class ErrorBody(msgspec.Struct, kw_only=True):
    """Every error answer: `{"error": {"code", "message", "status", "field"?}}`."""

    error: ErrorDetail


class RetryPolicy(msgspec.Struct, kw_only=True):
    max_attempts: int
    backoff_minutes: list[int]


class Cue(msgspec.Struct, kw_only=True):
    id: str
    name: str
    description: str | None
    status: CueStatus
    transport: Literal["webhook", "worker"]
    schedule: Schedule | None
    callback: Callback | None
    payload: dict[str, Any]
    retry: RetryPolicy
    on_failure: OnFailure | None
    next_run: DateTime | None
    last_run: DateTime | None
    run_count: int
    fired_count: int
    created_at: DateTime
    updated_at: DateTime


class CuePage(msgspec.Struct, kw_only=True):
    cues: list[Cue]
    total: int
    limit: int
    offset: int


class Fired(msgspec.Struct, kw_only=True):
    """A fire's answer (a repeated idempotency key answers the first execution)."""

    id: str
    cue_id: str
    scheduled_for: DateTime
    status: ExecutionStatus
    triggered_by: str


class FiredMany(msgspec.Struct, kw_only=True):
    executions: list[Fired]


class OutcomeInfo(msgspec.Struct, kw_only=True):
    success: bool
    result: str | None
    error: str | None
    metadata: dict[str, Any] | None
    recorded_at: DateTime | None
    worker_id: str | None


class Execution(msgspec.Struct, kw_only=True):
    id: str
    cue_id: str
    status: ExecutionStatus
    triggered_by: str
    scheduled_for: DateTime
    created_at: DateTime
    updated_at: DateTime
    task: str | None
    payload: dict[str, Any]
    attempts: int
    max_attempts: int
    claimed_by_worker: str | None
    claimed_at: DateTime | None
    lease_expires_at: DateTime | None
    outcome: OutcomeInfo | None
    detail: dict[str, Any] | None  # scheduled runs fired late, webhook delivery attempts
    redriven_to: str | None = None  # a dead letter sent again: the new execution
    redrive_of: str | None = None  # a redriven execution: the dead letter it re-sends


class Redriven(msgspec.Struct, kw_only=True):
    """`POST /v1/executions/{id}/redrive` (extension `executions.redrive`)."""

    execution_id: str
    redriven_to: str
    redriven: bool  # False: an earlier redrive had sent it again already


class ExecutionPage(msgspec.Struct, kw_only=True):
    executions: list[Execution]
    total: int
    limit: int
    offset: int
    truncated: bool | UnsetType = UNSET  # true when the page was cut by its size in bytes


class Claimable(msgspec.Struct, kw_only=True):
    execution_id: str
    cue_id: str
    cue_name: str | None
    task: str | None
    scheduled_for: DateTime
    payload: dict[str, Any]
    attempt: int


class ClaimableList(msgspec.Struct, kw_only=True):
    executions: list[Claimable]


class Claimed(msgspec.Struct, kw_only=True):
    """A claim's answer; the `claim.payload` extension adds the fields after `lease_seconds`."""

    claimed: bool
    execution_id: str
    lease_seconds: float
    cue_id: str | UnsetType = UNSET
    task: str | UnsetType | None = UNSET
    payload: dict[str, Any] | UnsetType = UNSET
    attempt: int | UnsetType = UNSET  # claims before this one, as the claimable list showed
    attempts: int | UnsetType = UNSET  # claims so far, this one included
    scheduled_for: DateTime | UnsetType = UNSET


class ClaimedMany(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The answer of a claim with `limit` (the `claim.many` extension), or of any
    claim with `settle` (`claim.settle`: then `claimed` may be false)."""

    claimed: bool
    executions: list[Claimed]
    settled: list[OutcomeResult] | None = None


class LeaseExtended(msgspec.Struct, kw_only=True):
    execution_id: str
    lease_extended_until: DateTime | None
    acknowledged: bool


class OutcomeRecorded(msgspec.Struct, kw_only=True, omit_defaults=True):
    execution_id: str
    outcome_recorded: bool
    outcome_state: ExecutionStatus
    reply: Fired | None = None  # the reply it fired (`outcome.reply`)


class OutcomeResult(msgspec.Struct, kw_only=True):
    """One item of an outcome batch: recorded, or failed on its own with `error`."""

    execution_id: str
    outcome_recorded: bool | UnsetType = UNSET
    outcome_state: ExecutionStatus | UnsetType = UNSET
    error: ErrorDetail | UnsetType = UNSET


class OutcomeResults(msgspec.Struct, kw_only=True):
    results: list[OutcomeResult]


class ReleaseResult(msgspec.Struct, kw_only=True):
    """One item of a release: handed back (pending again), or failed on its own."""

    execution_id: str
    released: bool
    error: ErrorDetail | UnsetType = UNSET


class ReleaseResults(msgspec.Struct, kw_only=True):
    """`POST /v1/executions/release` (extension `executions.release`)."""

    results: list[ReleaseResult]


class WorkerAck(msgspec.Struct, kw_only=True):
    acknowledged: bool
    server_time: DateTime


class Worker(msgspec.Struct, kw_only=True):
    worker_id: str
    handlers: list[str]
    last_heartbeat: DateTime


class WorkerList(msgspec.Struct, kw_only=True):
    workers: list[Worker]


class WebhookSecret(msgspec.Struct, kw_only=True):
    webhook_secret: str


class Registered(msgspec.Struct, kw_only=True):
    api_key: str
    email: str


class Info(msgspec.Struct, kw_only=True):
    version: str
    server: str
    extensions: list[str] | UnsetType = UNSET  # absent when no extension is served


class Health(msgspec.Struct, kw_only=True):
    status: str
    requests: int
    claim_attempts: int
    waiting_claims: int
    handed_claims: int  # executions a fire claimed for a parked claim in its transaction
