"""The storage interface of the embedded server, and the records it keeps.

Every backend (SQLite, PostgreSQL) implements `Storage` and must pass the same
contract suite (`tests/server/`). Times are UNIX seconds (float, UTC); the app
renders them as ISO 8601. Methods raise `ApiProblem` for the conflicts the
contract names, so every backend answers with the same codes.

Execution states (docs/cueapi.md):

    pending/retry_ready --claim--> delivering --outcome ok--> success
    delivering --outcome failed--> failed           (terminal)
    delivering --lease ran out--> pending           (attempts < max_attempts)
    delivering --lease ran out--> failed            (attempts >= max_attempts: claim cap)
    pending --unclaimed past the timeout--> missed  (terminal; 0 = never)

After committing anything that makes work claimable (a fire, a requeued
lease, a scheduled execution coming due) a backend calls
`self.notifier.notify(tenant_id, task)` so long-polling claims wake at once.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Protocol

import msgspec

from cuemsg.server.errors import ApiProblem
from cuemsg.server.notify import Handoff, Notifier, Waiter
from cuemsg.server.storage.feed import FeedBatch

CLAIMABLE = ("pending", "retry_ready")
TERMINAL = ("success", "failed", "missed")
UNSETTLED = ("pending", "retry_ready", "delivering")
EXECUTION_STATES = ("pending", "retry_ready", "delivering", "success", "failed", "missed")
CLAIMABLE_LIST_LIMIT = 50
IDEMPOTENCY_TTL = 24 * 3600.0  # seconds a fire's idempotency_key is remembered


class CueRow(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    name: str
    description: str | None = None
    status: str = "active"
    transport: str = "worker"
    schedule: dict[str, Any] | None = None
    callback: dict[str, Any] | None = None
    payload: dict[str, Any] = msgspec.field(default_factory=dict)
    retry: dict[str, Any] = msgspec.field(default_factory=dict)
    on_failure: dict[str, Any] | None = None
    next_run: float | None = None
    last_run: float | None = None
    run_count: int = 0
    fired_count: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0

    @property
    def max_attempts(self) -> int:
        return int(self.retry.get("max_attempts", 3))


class OutcomeRecord(msgspec.Struct, kw_only=True, omit_defaults=True):
    success: bool
    result: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None
    recorded_at: float = 0.0
    worker_id: str | None = None


class ExecutionRow(msgspec.Struct, kw_only=True):
    id: str
    tenant_id: str
    cue_id: str
    status: str
    payload: dict[str, Any]
    task: str | None
    agent: str | None
    scheduled_for: float
    created_at: float
    updated_at: float
    transport: str = "worker"
    triggered_by: str = "manual_fire"
    attempts: int = 0
    max_attempts: int = 3
    claimed_by_worker: str | None = None
    claimed_at: float | None = None
    lease_expires_at: float | None = None
    outcome: OutcomeRecord | None = None
    cue_name: str | None = None  # filled where a listing needs it
    size: int = 0  # bytes of the stored payload (JSON), when read from storage
    #: What the server adds about how this execution came to be or went (a late
    #: scheduled run, the last webhook delivery's error); None for most.
    detail: dict[str, Any] | None = None
    redriven_to: str | None = None  # a dead letter sent again: the new execution
    redrive_of: str | None = None  # a redriven execution: the dead letter it re-sends


class NewFire(msgspec.Struct, kw_only=True):
    """One validated fire, ready to store (the app resolves the effective payload)."""

    cue_id: str
    payload_override: dict[str, Any] | None = None
    merge_strategy: str | None = None  # None means "merge"
    scheduled_for: float
    idempotency_key: str | None = None
    body_hash: str | None = None  # canonical JSON of the fire body, key aside


class WorkerRow(msgspec.Struct, kw_only=True):
    worker_id: str
    handlers: list[str]
    last_heartbeat: float


_decode_cue = msgspec.json.Decoder(CueRow).decode


def cue_from_doc(doc: str | bytes, fired_count: int, last_run: float | None) -> CueRow:
    """A cue from its stored document and its fire counters.

    The counters live in columns of their own on every backend (a fire bumps
    them without reading or rewriting the document); the document holds
    everything else (its own copy of the counters is stale)."""
    cue = _decode_cue(doc)
    cue.fired_count = fired_count
    cue.last_run = last_run
    return cue


def effective_payload(cue_payload: dict[str, Any], fire: NewFire) -> dict[str, Any]:
    """The payload an execution carries: fixed at fire time (docs/cueapi.md, Fire)."""
    if fire.payload_override is None:
        return dict(cue_payload)
    if fire.merge_strategy == "replace":
        return dict(fire.payload_override)
    return {**cue_payload, **fire.payload_override}


def routing_keys(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """The `task` and `agent` a claim filter matches (strings only)."""
    task = payload.get("task")
    agent = payload.get("agent")
    return (task if isinstance(task, str) else None, agent if isinstance(agent, str) else None)


#: The execution columns every backend selects, in this order (`execution_from_row`).
EXECUTION_COLUMNS = (
    "id, tenant_id, cue_id, status, task, agent, payload, transport, triggered_by, "
    "scheduled_for, created_at, updated_at, attempts, max_attempts, claimed_by_worker, "
    "claimed_at, lease_expires_at, outcome, detail, redriven_to, redrive_of"
)
_decode_payload = msgspec.json.Decoder(dict[str, Any]).decode
_decode_outcome = msgspec.json.Decoder(OutcomeRecord).decode


def execution_from_row(row: Sequence[Any], cue_name: str | None = None) -> ExecutionRow:
    """An `ExecutionRow` from a row of `EXECUTION_COLUMNS` (payload and outcome as JSON text)."""
    return ExecutionRow(
        id=row[0],
        tenant_id=row[1],
        cue_id=row[2],
        status=row[3],
        task=row[4],
        agent=row[5],
        payload=_decode_payload(row[6]),
        transport=row[7],
        triggered_by=row[8],
        scheduled_for=row[9],
        created_at=row[10],
        updated_at=row[11],
        attempts=row[12],
        max_attempts=row[13],
        claimed_by_worker=row[14],
        claimed_at=row[15],
        lease_expires_at=row[16],
        outcome=_decode_outcome(row[17]) if row[17] is not None else None,
        cue_name=cue_name,
        size=len(row[6]),
        detail=_decode_payload(row[18]) if row[18] is not None else None,
        redriven_to=row[19],
        redrive_of=row[20],
    )


def within_bytes(rows: Iterable[Sequence[Any]], max_bytes: int) -> list[Sequence[Any]]:
    """The rows of `EXECUTION_COLUMNS` up to the one whose payload takes the
    page past `max_bytes` (0: no cap); always the first, so a page is never
    empty while rows remain. Rows past the cap are never read from a lazy cursor."""
    taken: list[Sequence[Any]] = []
    total = 0
    for row in rows:
        total += len(row[6])
        if taken and max_bytes and total > max_bytes:
            break
        taken.append(row)
    return taken


def where_equal(mark: str, **columns: Any) -> tuple[str, list[Any]]:
    """`a = <mark> AND b = <mark> ...` over the columns given a value (None: no filter),
    and its arguments; `mark` is the backend's placeholder (`?` or `%s`)."""
    given = [(name, value) for name, value in columns.items() if value is not None]
    return " AND ".join(f"{name} = {mark}" for name, _ in given), [v for _, v in given]


def unknown_cursor(execution_id: str) -> ApiProblem:
    return ApiProblem(
        422,
        "validation_error",
        f"before: no execution {execution_id!r} to page from (use an id from the listing)",
        field="before",
    )


def claimable_condition(mark: str) -> str:
    """The condition of an execution a worker may claim at the time bound to `mark`."""
    return (
        f"status IN ('pending', 'retry_ready') AND transport = 'worker' AND scheduled_for <= {mark}"
    )


def claimable_where(
    mark: str, tenant_id: str, task: str | None, agent: str | None, now: float
) -> tuple[str, list[Any]]:
    """The where-clause (and its arguments) of the executions a claim filtered by
    `task` / `agent` may take at `now`; `mark` is the backend's placeholder."""
    equal, args = where_equal(mark, tenant_id=tenant_id, task=task, agent=agent)
    return f"{equal} AND {claimable_condition(mark)}", [*args, now]


def new_execution(
    tenant_id: str, cue: CueRow, fire: NewFire, execution_id: str, now: float
) -> ExecutionRow:
    """The pending execution a fire of `cue` makes (not stored yet)."""
    payload = effective_payload(cue.payload, fire)
    task, agent = routing_keys(payload)
    return ExecutionRow(
        id=execution_id,
        tenant_id=tenant_id,
        cue_id=cue.id,
        status="pending",
        payload=payload,
        task=task,
        agent=agent,
        transport=cue.transport,
        scheduled_for=max(fire.scheduled_for, now),
        created_at=now,
        updated_at=now,
        max_attempts=cue.max_attempts,
    )


def new_execution_id() -> str:
    return new_execution_ids(1)[0]


# A version 7 UUID (RFC 9562): the Unix time in milliseconds in the top 48 bits, then the
# version (7), 12 random bits, the variant (0b10) and 62 random bits.
_UUID7_KEEP = ((1 << 128) - 1) ^ (0xF << 76) ^ (0x3 << 62)
_UUID7_SET = (0x7 << 76) | (0x2 << 62)


def new_execution_ids(n: int) -> list[str]:
    """`n` version 7 UUIDs as text, from one read of the OS's randomness.

    Time-ordered ids put each new execution at the end of the id index instead
    of on a random page of it: on SQLite, ~10 % less storage CPU a message once
    the history outgrows the page cache (docs/benchmarks.md). Ids made in the
    same millisecond are unique (74 random bits) but not ordered among themselves.
    """
    top = (time.time_ns() // 1_000_000) << 80
    raw = os.urandom(10 * n)
    ids = []
    for i in range(0, 10 * n, 10):
        v = (top | int.from_bytes(raw[i : i + 10], "big")) & _UUID7_KEEP | _UUID7_SET
        h = f"{v:032x}"
        ids.append(f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return ids


def check_lease(execution_id: str, status: str, holder: str | None, worker_id: str | None) -> None:
    """The heartbeat/outcome rule shared by every backend."""
    if status != "delivering":
        raise ApiProblem(
            409,
            "execution_not_claiming",
            f"execution {execution_id!r} is {status}, not delivering",
        )
    if worker_id is not None and holder != worker_id:
        raise ApiProblem(
            403,
            "not_execution_owner",
            f"execution {execution_id!r} is leased to another worker, not {worker_id!r}",
        )


#: In an outcome that fires its reply (`outcome.reply`), this token stands for the
#: reply's execution id, which does not exist before the request.
REPLY_TOKEN = "{reply_execution_id}"
MAX_OUTCOME_TEXT = 2000  # result / error, as the contract bounds them


def _named(value: Any, execution_id: str) -> Any:
    if isinstance(value, str):
        return value.replace(REPLY_TOKEN, execution_id)
    if isinstance(value, dict):
        return {k: _named(v, execution_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_named(v, execution_id) for v in value]
    return value


def name_reply(outcome: OutcomeRecord, execution_id: str) -> OutcomeRecord:
    """`outcome` with `REPLY_TOKEN` replaced by the reply's execution id (text cut to bounds)."""
    result = None if outcome.result is None else _named(outcome.result, execution_id)
    error = None if outcome.error is None else _named(outcome.error, execution_id)
    return msgspec.structs.replace(
        outcome,
        result=None if result is None else result[:MAX_OUTCOME_TEXT],
        error=None if error is None else error[:MAX_OUTCOME_TEXT],
        metadata=_named(outcome.metadata, execution_id),
    )


def not_dead_letter(execution_id: str, status: str) -> ApiProblem:
    return ApiProblem(
        409,
        "not_dead_letter",
        f"execution {execution_id!r} is {status}, not a dead letter (failed): nothing to redrive",
    )


def outcome_already_recorded(execution_id: str) -> ApiProblem:
    return ApiProblem(
        409, "outcome_already_recorded", f"execution {execution_id!r} already has an outcome"
    )


def name_taken(name: str) -> ApiProblem:
    return ApiProblem(409, "cue_name_taken", f"a cue named {name!r} already exists", field="name")


def idempotency_conflict(key: str, index: int, count: int) -> ApiProblem:
    return ApiProblem(
        409,
        "idempotency_key_conflict",
        f"idempotency_key {key!r} was used with a different body",
        field=f"fires[{index}].idempotency_key" if count > 1 else "idempotency_key",
    )


def hand_outs(
    notifier: Notifier, tenant_id: str, created: Iterable[ExecutionRow], now: float
) -> Iterator[tuple[Waiter, Handoff, list[ExecutionRow]]]:
    """New executions a worker can claim now, shared out among the parked claims that
    take handed work (`Notifier.taker`): (claim, its `Handoff`, its batch), oldest
    claim first, each up to its limit, in the order fired. Lazy: a claim is taken
    only when its turn comes, so a caller whose claim statement fails takes no more."""
    due: dict[str | None, list[ExecutionRow]] = {}
    for execution in created:
        if execution.scheduled_for <= now and execution.transport == "worker":
            due.setdefault(execution.task, []).append(execution)
    for task, executions in due.items():
        while executions:
            waiter = notifier.taker(tenant_id, task)
            if waiter is None or waiter.handoff is None:
                break
            taking = waiter.handoff
            batch, executions = executions[: taking.limit], executions[taking.limit :]
            yield waiter, taking, batch


class Storage(Protocol):
    """What the server needs from a backend. All methods are scoped by tenant."""

    notifier: Notifier
    #: Whether a fire claims new work for a parked claim of this process in its own
    #: transaction (`Notifier.taker`, `Waiter.hand`).
    hands_over: bool
    #: Whether that hand-over also records the outcomes the claim carries
    #: (`Handoff.settle`), and every call completes without yielding to the event
    #: loop: the claim handler then lets the outcomes ride.
    settle_rides: bool
    #: What the sweeps of this process did (`lease_expired`, `missed`), for /metrics.
    swept: Counter[str]

    async def open(self) -> None:
        """Connect and create or migrate the schema."""

    async def close(self) -> None: ...

    # server metadata (the development key, schema version)
    async def get_meta(self, key: str) -> str | None: ...
    async def set_meta(self, key: str, value: str) -> None: ...

    # tenants and keys
    async def create_tenant(
        self, tenant_id: str, email: str, key_hash: str, now: float
    ) -> None: ...
    async def tenant_for_key(self, key_hash: str) -> str | None: ...
    async def add_api_key(self, tenant_id: str, key_hash: str, now: float) -> None:
        """Another key for an existing tenant (`cuemsg keys create`)."""

    # usage (per-tenant quotas)
    async def count_unsettled(self, tenant_id: str) -> int:
        """Executions of the tenant that are `pending`, `retry_ready` or `delivering`."""

    async def stored_bytes(self, tenant_id: str) -> int:
        """Bytes of the tenant's stored execution payloads (as JSON)."""

    # cues
    async def create_cue(self, cue: CueRow) -> CueRow:
        """Store a new cue; 409 `cue_name_taken` on a duplicate name."""

    async def get_cue(self, tenant_id: str, cue_id: str) -> CueRow | None: ...
    async def list_cues(
        self, tenant_id: str, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[CueRow], int]: ...
    async def update_cue(
        self, tenant_id: str, cue_id: str, changes: dict[str, Any], now: float
    ) -> CueRow | None:
        """Apply `changes` (column -> value); None if no such cue; 409 on a taken name."""

    async def delete_cue(self, tenant_id: str, cue_id: str) -> bool: ...

    # fire
    async def fire(self, tenant_id: str, fires: list[NewFire], now: float) -> list[ExecutionRow]:
        """Create one execution per fire in one transaction (all or none).

        404 `cue_not_found` (field `fires[i].cue_id` when batched) if a cue is
        missing. A repeated `idempotency_key` with the same `body_hash` returns
        the first execution and creates none; with another body it is 409
        `idempotency_key_conflict`. Keys older than 24 hours are forgotten.
        """

    # executions
    async def get_execution(self, tenant_id: str, execution_id: str) -> ExecutionRow | None: ...
    async def list_executions(
        self,
        tenant_id: str,
        *,
        cue_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        before: str | None = None,
        max_bytes: int = 0,
    ) -> tuple[list[ExecutionRow], int]:
        """A page, newest first, and the total of every match; the page ends early
        once its payloads pass `max_bytes` (0: no cap; see `within_bytes`). `before`
        (an execution id; 422 when it is not the tenant's) is a cursor: only the
        executions fired before that one are listed and counted."""

    async def list_claimable(
        self,
        tenant_id: str,
        *,
        task: str | None,
        agent: str | None,
        now: float,
        limit: int,
        max_bytes: int = 0,
    ) -> list[ExecutionRow]:
        """Claimable executions of worker cues, oldest first, with `cue_name` set
        (cut by `max_bytes` like `list_executions`)."""

    async def claim(
        self, tenant_id: str, execution_id: str, worker_id: str, now: float, lease_seconds: float
    ) -> ExecutionRow:
        """Claim one execution atomically; 404 if unknown, 409 `claim_failed` if not claimable."""

    async def claim_next(
        self,
        tenant_id: str,
        worker_id: str,
        *,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> list[ExecutionRow]:
        """Claim up to `limit` oldest claimable executions atomically; [] when none."""

    async def settle_and_claim(
        self,
        tenant_id: str,
        worker_id: str,
        outcomes: list[tuple[str, OutcomeRecord]],
        *,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> tuple[list[ExecutionRow | ApiProblem], list[ExecutionRow]]:
        """`record_outcomes` (by `worker_id`) then `claim_next`, in one transaction:
        (each outcome or its `ApiProblem`, in order; the executions claimed, maybe
        none). A refused outcome does not stop the claim."""

    async def settle_and_claim_if_claimable(
        self,
        tenant_id: str,
        worker_id: str,
        outcomes: list[tuple[str, OutcomeRecord]],
        *,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> tuple[list[ExecutionRow | ApiProblem], list[ExecutionRow]] | None:
        """`settle_and_claim` when something is claimable; else records nothing and
        returns None (the claim handler then lets the outcomes ride on a hand-over)."""

    async def heartbeat(
        self,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        now: float,
        lease_seconds: float,
    ) -> ExecutionRow:
        """Extend the lease; 404, 403 `not_execution_owner`, 409 `execution_not_claiming`."""

    async def record_outcome(
        self, tenant_id: str, execution_id: str, worker_id: str | None, outcome: OutcomeRecord
    ) -> ExecutionRow:
        """Write-once outcome; 404, 403, 409 `outcome_already_recorded` / `..._not_claiming`."""

    async def record_outcomes(
        self, tenant_id: str, items: list[tuple[str, OutcomeRecord]], worker_id: str | None
    ) -> list[ExecutionRow | ApiProblem]:
        """Many outcomes in one transaction; each item succeeds or fails on its own
        (its `ApiProblem` is returned in its place, in order)."""

    async def record_outcome_and_fire(
        self,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        outcome: OutcomeRecord,
        reply: NewFire,
        now: float,
    ) -> tuple[ExecutionRow, ExecutionRow]:
        """Fire `reply` and record `outcome` (named by `name_reply`) in one transaction:
        both or neither. The outcome's errors as `record_outcome`, the fire's as `fire`.
        Answers (the settled execution, the reply's execution)."""

    # workers
    async def worker_heartbeat(
        self, tenant_id: str, worker_id: str, handlers: list[str], now: float
    ) -> None: ...
    async def list_workers(self, tenant_id: str) -> list[WorkerRow]: ...

    # schedules (cuemsg.server.schedules)
    async def due_cues(self, now: float, limit: int) -> list[CueRow]:
        """Active cues whose `next_run` is at or before `now`, soonest first."""

    async def advance_schedule(
        self, cue: CueRow, due: float, next_run: float | None, execution: ExecutionRow | None
    ) -> ExecutionRow | None:
        """Claim the cue's run at `due` and, with `execution`, fire it.

        One conditional update moves the cue's `next_run` from `due` to
        `next_run` (only if it is still `due` and the cue active): of several
        replicas, exactly one wins. The winner stores `execution` (triggered by
        the schedule) and counts the run (`run_count`, `fired_count`,
        `last_run`) in the same transaction. None when the claim was lost.
        """

    # webhooks (cuemsg.server.webhooks)
    async def webhook_tenants_due(self, now: float) -> list[str]:
        """Tenants with webhook executions due for delivery."""

    async def claim_deliveries(
        self, tenant_id: str, now: float, lease_seconds: float, limit: int
    ) -> list[ExecutionRow]:
        """Lease up to `limit` due webhook executions of a tenant, oldest first
        (`attempts` counts deliveries; a lease left by a crashed server runs out
        and the sweep requeues it, so delivery is at least once)."""

    async def finish_delivery(
        self,
        execution_id: str,
        attempt: int,
        *,
        outcome: OutcomeRecord | None,
        retry_at: float | None,
        detail: dict[str, Any],
    ) -> bool:
        """Close delivery `attempt`: with `outcome`, for good (`success` or
        `failed`); else `retry_ready` again at `retry_at`. False if the
        execution is no longer in that attempt (its lease ran out meanwhile)."""

    async def webhook_secret(self, tenant_id: str, candidate: str, *, replace: bool) -> str:
        """The tenant's webhook signing secret: `candidate` is stored if there is
        none yet (or always, with `replace`); the stored one is returned."""

    # the event feed and redrive (cuemsg/server/storage/feed.py)
    async def event_head(self) -> int:
        """The newest event stamp given so far (0 for none)."""

    async def read_events(
        self, tenant_id: str, after: int, *, cue_id: str | None, limit: int
    ) -> FeedBatch:
        """The tenant's executions stamped after `after`: a batch holding every
        stamp in (after, batch.upto], read at most about `limit` rows at a time."""

    async def waiting_by_cue(self, limit: int) -> list[tuple[str, str | None, int]]:
        """(cue id, cue name, claimable executions) of the `limit` cues with the most
        waiting, across tenants (for /metrics)."""

    async def redrive(
        self, tenant_id: str, execution_id: str, now: float
    ) -> tuple[ExecutionRow, bool]:
        """Fire a dead letter's message again (`redrive_payload`) and name the new
        execution on the dead one, atomically; the new execution and True, or the
        one made by an earlier redrive and False. 404, 409 `not_dead_letter`."""

    async def release(
        self, tenant_id: str, execution_ids: list[str], worker_id: str, now: float
    ) -> list[ExecutionRow | ApiProblem]:
        """Hand claimed executions back (`executions.release`): each one `worker_id`
        holds goes back to `pending` at once, its attempt not counted (`attempts`
        one less), stamped for the feed like a lost lease; waiters are woken. One
        transaction; each item answers on its own: the row, or 404, 409
        `execution_not_claiming`, 403 `not_execution_owner`."""

    # time-driven transitions (run by the server's sweeper)
    async def sweep(self, now: float, *, since: float, unclaimed_timeout: float) -> None:
        """Requeue expired leases (or fail them past the claim cap), mark long-unclaimed
        executions `missed`, and notify waiters of work that became claimable,
        including scheduled executions that came due in (since, now]."""

    async def purge(self, *, settled_before: float | None, dead_before: float | None) -> int:
        """Delete history (retention): `success` executions settled before
        `settled_before`, `failed` and `missed` ones before `dead_before`, and
        replies (`cuemsg.kind` `reply` or `error`) never claimed, made before
        `settled_before`. Never a `pending` message or a `delivering` one.
        None skips that part. Returns how many executions went."""
