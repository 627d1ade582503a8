"""The ops a flow yields to its driver, the `Flow` type and `advance()`."""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from cuemsg.cueapi.models import FireRequest, OutcomeRequest

if TYPE_CHECKING:  # the router imports nothing from here; only the type is needed
    from cuemsg.mailbox._replies import PendingReply

T = TypeVar("T")


Flow = Generator["Op", Any, T]


# -- ops ----------------------------------------------------------------------------------


class Op:
    """One step a flow asks its driver to perform."""

    def call(self, client: Any) -> Any:
        """Run against a `CueClient` (the answer) or `AsyncCueClient` (an awaitable)."""
        # Ops like Pause or Spawn are the driver's own business, not the client's.
        raise TypeError(f"{type(self).__name__} is run by the driver itself, not by a client")


@dataclass(frozen=True)
class CreateCue(Op):
    name: str
    payload: dict[str, Any]
    schedule: dict[str, Any]
    retry: dict[str, Any]
    description: str

    def call(self, client: Any) -> Any:
        return client.cues.create(
            self.name,
            transport="worker",
            payload=self.payload,
            schedule=self.schedule,
            retry=self.retry,
            description=self.description,
        )


@dataclass(frozen=True)
class ListCues(Op):
    offset: int
    limit: int

    def call(self, client: Any) -> Any:
        return client.cues.list(limit=self.limit, offset=self.offset)


@dataclass(frozen=True)
class GetCue(Op):
    cue_id: str

    def call(self, client: Any) -> Any:
        return client.cues.get(self.cue_id)


@dataclass(frozen=True)
class UpdateCue(Op):
    cue_id: str
    changes: dict[str, Any]

    def call(self, client: Any) -> Any:
        return client.cues.update(self.cue_id, **self.changes)


@dataclass(frozen=True)
class DeleteCue(Op):
    cue_id: str

    def call(self, client: Any) -> Any:
        return client.cues.delete(self.cue_id)


@dataclass(frozen=True)
class Fire(Op):
    cue_id: str
    payload: dict[str, Any]
    idempotency_key: str
    send_at: datetime | None = None

    # Fire, Claim and Deliver are made once per message: their __init__ writes the fields
    # as the generated one does, without its object.__setattr__ per field (half the cost).
    def __init__(
        self,
        cue_id: str,
        payload: dict[str, Any],
        idempotency_key: str,
        send_at: datetime | None = None,
    ) -> None:
        fields = self.__dict__
        fields["cue_id"] = cue_id
        fields["payload"] = payload
        fields["idempotency_key"] = idempotency_key
        fields["send_at"] = send_at

    def call(self, client: Any) -> Any:
        return client.cues.fire(
            self.cue_id, self.payload, send_at=self.send_at, idempotency_key=self.idempotency_key
        )


@dataclass(frozen=True)
class FireMany(Op):
    fires: list[FireRequest]

    def call(self, client: Any) -> Any:
        return client.cues.fire_many(self.fires)


@dataclass(frozen=True)
class Claim(Op):
    worker_id: str
    task: str
    wait: float | None
    limit: int | None
    settle: tuple[OutcomeRequest, ...] = ()  # acks recorded first (`claim.settle`)

    def __init__(
        self,
        worker_id: str,
        task: str,
        wait: float | None,
        limit: int | None,
        settle: tuple[OutcomeRequest, ...] = (),
    ) -> None:
        fields = self.__dict__  # as Fire's
        fields["worker_id"] = worker_id
        fields["task"] = task
        fields["wait"] = wait
        fields["limit"] = limit
        fields["settle"] = settle

    def call(self, client: Any) -> Any:
        return client.executions.claim_next(
            worker_id=self.worker_id,
            task=self.task,
            wait=self.wait,
            limit=self.limit,
            settle=self.settle,
        )


@dataclass(frozen=True)
class RenewLease(Op):
    execution_id: str
    worker_id: str

    def call(self, client: Any) -> Any:
        return client.executions.heartbeat(self.execution_id, worker_id=self.worker_id)


@dataclass(frozen=True)
class Release(Op):
    """Hand claimed executions back (`executions.release`): pending again at once."""

    worker_id: str
    execution_ids: tuple[str, ...]

    def call(self, client: Any) -> Any:
        return client.executions.release(self.execution_ids, worker_id=self.worker_id)


@dataclass(frozen=True)
class RecordOutcome(Op):
    execution_id: str
    worker_id: str
    success: bool
    result: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None

    def call(self, client: Any) -> Any:
        return client.executions.report_outcome(
            self.execution_id,
            worker_id=self.worker_id,
            success=self.success,
            result=self.result,
            error=self.error,
            metadata=self.metadata,
        )


@dataclass(frozen=True)
class RecordReply(Op):
    """Fire `reply` and record the outcome in one request (extension `outcome.reply`)."""

    execution_id: str
    worker_id: str
    success: bool
    reply: FireRequest
    result: str | None = None
    error: str | None = None
    metadata: dict[str, Any] | None = None

    def call(self, client: Any) -> Any:
        return client.executions.report_outcome(
            self.execution_id,
            worker_id=self.worker_id,
            success=self.success,
            result=self.result,
            error=self.error,
            metadata=self.metadata,
            reply=self.reply,
        )


@dataclass(frozen=True)
class RecordOutcomes(Op):
    outcomes: list[OutcomeRequest]
    worker_id: str

    def call(self, client: Any) -> Any:
        return client.executions.report_outcomes(self.outcomes, worker_id=self.worker_id)


@dataclass(frozen=True)
class ClaimById(Op):
    """Claim one execution by id (plain contract too); 409 `ClaimFailed` if it is not free."""

    execution_id: str
    worker_id: str

    def call(self, client: Any) -> Any:
        return client.executions.claim(self.execution_id, worker_id=self.worker_id)


@dataclass(frozen=True)
class ListClaimable(Op):
    task: str

    def call(self, client: Any) -> Any:
        return client.executions.list_claimable(task=self.task)


@dataclass(frozen=True)
class GetExecution(Op):
    execution_id: str

    def call(self, client: Any) -> Any:
        return client.executions.get(self.execution_id)


@dataclass(frozen=True)
class ListExecutions(Op):
    cue_id: str
    status: str | None  # None: every status
    offset: int
    limit: int

    def call(self, client: Any) -> Any:
        return client.executions.list(
            cue_id=self.cue_id, status=self.status, limit=self.limit, offset=self.offset
        )


@dataclass(frozen=True)
class ListWorkers(Op):
    def call(self, client: Any) -> Any:
        return client.workers.list()


@dataclass(frozen=True)
class AnnounceWorker(Op):
    worker_id: str
    handlers: list[str]

    def call(self, client: Any) -> Any:
        return client.workers.heartbeat(self.worker_id, self.handlers)


@dataclass(frozen=True)
class Extensions(Op):
    def call(self, client: Any) -> Any:
        # AsyncCueClient probes with a coroutine; CueClient's property probes on access.
        load = getattr(client, "load_extensions", None)
        return load() if load is not None else client.extensions


# Ops the driver runs itself.


@dataclass(frozen=True)
class Pause(Op):
    seconds: float


@dataclass(frozen=True)
class AwaitReply(Op):
    """Wait up to `timeout` s for `pending.event`; the answer is ignored (read `pending`)."""

    pending: PendingReply
    timeout: float


@dataclass(frozen=True)
class CallHandler(Op):
    """Call `handler(message)` (await it if it returns an awaitable); answer its result."""

    handler: Callable[[Any], Any]
    message: Any


@dataclass(frozen=True)
class Deliver(Op):
    """Hand `message` to the caller of `receive()`; resumed when it asks for the next one."""

    message: Any

    def __init__(self, message: Any) -> None:
        self.__dict__["message"] = message  # as Fire's


@dataclass(frozen=True)
class StartReplies(Op):
    """Make sure the mailbox's reply loop runs."""


@dataclass(frozen=True)
class IdleWait(Op):
    """Sleep until a request starts waiting (`ReplyRouter.on_expect`) or `timeout` passes."""

    timeout: float


@dataclass(frozen=True)
class WaitSlots(Op):
    """Wait until at least one of `concurrency` handler slots is free; answer how many are."""

    concurrency: int


@dataclass(frozen=True)
class Spawn(Op):
    """Run `flow` concurrently in a handler slot."""

    flow: Flow[None]


@dataclass(frozen=True)
class HoldSlot(Op):
    """Count one more handler slot busy: a message waits for its thread in `serve()`."""


@dataclass(frozen=True)
class ReleaseSlot(Op):
    """Give back one slot taken by `HoldSlot` (its message's handling ended)."""


@dataclass(frozen=True)
class Drain(Op):
    """Wait for every spawned flow to finish."""


def advance(flow: Flow[T], value: Any, exc: BaseException | None) -> tuple[bool, Any]:
    """Resume `flow` with a value or an error; (True, result) when it finished, else (False, op)."""
    try:
        op = flow.throw(exc) if exc is not None else flow.send(value)
    except StopIteration as stop:
        return True, stop.value
    return False, op


def drive(flow: Flow[T], perform: Callable[[Op], Any]) -> T:
    """Run `flow` to its end, performing each op it yields with `perform` (an op
    that raises resumes the flow with the error). The async twin is `_aopen.adrive`."""
    value: Any = None
    exc: BaseException | None = None
    try:
        while True:
            try:  # `advance`, written in: drivers step every op of every message
                op = flow.throw(exc) if exc is not None else flow.send(value)
            except StopIteration as stop:
                result: T = stop.value
                return result
            value, exc = None, None
            try:
                value = perform(op)
            except Exception as err:
                exc = err
    finally:
        flow.close()
