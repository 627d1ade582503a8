"""Every client operation as a generator flow: the one code path of both clients.

A flow yields `Send` and `Sleep` steps (from `_routes`) and returns the
operation's result; `CueClient` and `AsyncCueClient` only run the steps
(httpx send, `time.sleep` / `anyio.sleep`). Flows that take several
requests (claim_next on the plain contract, batches with a fallback, the
lazy `/v1/info` probe) are written here once.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Generator, Iterator, Sequence
from typing import Any, TypeVar

import msgspec

from cuemsg._exceptions import (
    ClaimFailed,
    CueAPIError,
    ExtensionNotAvailable,
    MissingAPIKey,
    NotFound,
)
from cuemsg.cueapi import _routes as routes
from cuemsg.cueapi._retry import RetryPolicy, send_with_retries
from cuemsg.cueapi._routes import Call, Sleep, Step
from cuemsg.cueapi.models import (
    Claimable,
    Claimed,
    ClaimResult,
    Execution,
    FireRequest,
    FireResult,
    Info,
    Model,
    OutcomeRequest,
    OutcomeResult,
    Redriven,
    Released,
    Worker,
    decode_model,
)

_T = TypeVar("_T")
_M = TypeVar("_M", bound=Model)
_I = TypeVar("_I")

Flow = Generator[Step, Any, _T]

BATCH_LIMIT = 100  # items per fire.batch / outcome.batch request (the server's bound)
MAX_RELISTS = 5  # plain claim_next: listings tried before answering "nothing"
MAX_CLAIM_MISSES = 5  # plain claim_next: 409s on one listing before listing again
POLL_MIN = 0.05  # plain claim_next with wait: first pause between polls
POLL_MAX = 1.0  # ... doubling up to this


class FlowState:
    """What flows share across calls of one client: retry policy and the extension probe."""

    def __init__(self, *, policy: RetryPolicy, use_extensions: bool, has_key: bool = True) -> None:
        self.policy = policy
        self.has_key = has_key
        self.use_extensions = use_extensions
        # None: not probed yet. use_extensions=False never probes.
        self.extensions: frozenset[str] | None = None if use_extensions else frozenset()


def request(st: FlowState, call: Call) -> Flow[Any]:
    """Send one call (with retries); return its decoded JSON answer."""
    return send_with_retries(call, st.policy)


def request_model(st: FlowState, call: Call, model: type[_M]) -> Flow[_M]:
    """Send one call; decode its answer into `model`."""
    data = yield from request(st, call)
    return _decode(call, data, model)


def _decode(call: Call, data: Any, model: type[_M]) -> _M:
    try:
        return decode_model(data, model)
    except msgspec.ValidationError as exc:
        raise routes.invalid_answer(call, exc) from exc


def _decode_list(call: Call, data: Any, key: str, model: type[_M]) -> list[_M]:
    items = data.get(key) if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise routes.invalid_answer(call, ValueError(f"no {key!r} list in the answer"))
    return [_decode(call, item, model) for item in items]


# -- discovery ----------------------------------------------------------------------------


def info(st: FlowState) -> Flow[Info]:
    """`GET /v1/info`; also fills the extension cache if it was not probed yet."""
    result = yield from request_model(st, routes.info(), Info)
    if st.extensions is None:
        st.extensions = frozenset(result.extensions)
    return result


def extensions(st: FlowState) -> Flow[frozenset[str]]:
    """The extensions the server lists, probed once per client (none if it has no /v1/info)."""
    if st.extensions is None:
        try:
            yield from info(st)
        except CueAPIError:
            # A server without /v1/info (or one that errs on it) serves the plain contract.
            st.extensions = frozenset()
    assert st.extensions is not None
    return st.extensions


def _authed_extensions(st: FlowState) -> Flow[frozenset[str]]:
    """The extensions, for a flow whose requests need a key: no probe without one."""
    if not st.has_key:
        raise MissingAPIKey()
    return (yield from extensions(st))


def _require(st: FlowState, name: str) -> Flow[None]:
    exts = yield from _authed_extensions(st)
    if name not in exts:
        raise ExtensionNotAvailable(name)


# -- fire ---------------------------------------------------------------------------------


def _chunks(items: Sequence[_I], size: int = BATCH_LIMIT) -> Iterator[Sequence[_I]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _fire_body(fire: FireRequest) -> dict[str, Any]:
    return routes.fire_body(
        payload_override=fire.payload_override,
        merge_strategy=fire.merge_strategy,
        send_at=fire.send_at,
        idempotency_key=fire.idempotency_key,
    )


def fire_many(st: FlowState, fires: Sequence[FireRequest]) -> Flow[list[FireResult]]:
    """Fire many: `POST /v1/fire` per 100 with `fire.batch`, else one fire each, in order.

    On the plain path the first error is raised; the fires before it stay made.
    """
    bodies = [(fire.cue_id, _fire_body(fire)) for fire in fires]  # validates send_at first
    if not bodies:
        return []
    exts = yield from _authed_extensions(st)
    results: list[FireResult] = []
    if "fire.batch" in exts:
        for chunk in _chunks(bodies):
            call = routes.fire_batch([{"cue_id": cue_id, **body} for cue_id, body in chunk])
            data = yield from request(st, call)
            results.extend(_decode_list(call, data, "executions", FireResult))
    else:
        for cue_id, body in bodies:
            results.append((yield from request_model(st, routes.fire(cue_id, body), FireResult)))
    return results


# -- outcomes -----------------------------------------------------------------------------


def _outcome_body(outcome: OutcomeRequest) -> dict[str, Any]:
    return routes.outcome_body(
        success=outcome.success,
        result=outcome.result,
        error=outcome.error,
        metadata=outcome.metadata,
    )


def report_outcomes(
    st: FlowState, outcomes: Sequence[OutcomeRequest], *, worker_id: str
) -> Flow[list[OutcomeResult | CueAPIError]]:
    """Report many outcomes; each item succeeds or fails on its own (errors are returned).

    `POST /v1/executions/outcomes` per 100 with `outcome.batch`, else one by one.
    A transport failure, or an error for the whole batch request, is raised.
    """
    results: list[OutcomeResult | CueAPIError] = []
    if not outcomes:
        return results
    exts = yield from _authed_extensions(st)
    if "outcome.batch" in exts:
        for chunk in _chunks(outcomes):
            items = [{"execution_id": o.execution_id, **_outcome_body(o)} for o in chunk]
            call = routes.report_outcomes(items, worker_id=worker_id)
            data = yield from request(st, call)
            answers = data.get("results") if isinstance(data, dict) else None
            results.extend(_outcome_results(call, answers, len(items)))
    else:
        for o in outcomes:
            call = routes.report_outcome(o.execution_id, _outcome_body(o), worker_id=worker_id)
            try:
                results.append((yield from request_model(st, call, OutcomeResult)))
            except CueAPIError as err:
                results.append(err)
    return results


def report_outcome(
    st: FlowState,
    execution_id: str,
    outcome: OutcomeRequest,
    *,
    worker_id: str,
    reply: FireRequest | None,
) -> Flow[OutcomeResult]:
    """One outcome; with `reply`, the reply is fired in the same request (`outcome.reply`)."""
    body = _outcome_body(outcome)
    if reply is not None:
        yield from _require(st, "outcome.reply")
        body["reply"] = {"cue_id": reply.cue_id, **_fire_body(reply)}
    call = routes.report_outcome(execution_id, body, worker_id=worker_id)
    return (yield from request_model(st, call, OutcomeResult))


# -- claims -------------------------------------------------------------------------------


def list_claimable(st: FlowState, *, task: str | None, agent: str | None) -> Flow[list[Claimable]]:
    call = routes.list_claimable(task=task, agent=agent)
    data = yield from request(st, call)
    return _decode_list(call, data, "executions", Claimable)


def claim(st: FlowState, execution_id: str, *, worker_id: str) -> Flow[Claimed]:
    call = routes.claim(execution_id, worker_id=worker_id)
    data = yield from request(st, call)
    items = _claimed_items(call, data)
    return _decode(call, items[0], Claimed)


def _outcome_results(call: Call, answers: Any, count: int) -> list[OutcomeResult | CueAPIError]:
    """Per-item outcome results (`outcome.batch`, `claim.settle`), in order."""
    if not isinstance(answers, list) or len(answers) != count:
        raise routes.invalid_answer(call, ValueError("results do not match the outcomes"))
    results: list[OutcomeResult | CueAPIError] = []
    for answer in answers:
        if isinstance(answer, dict) and "error" in answer:
            results.append(routes.item_error(answer))
        else:
            results.append(_decode(call, answer, OutcomeResult))
    return results


def _settled(call: Call, data: Any, count: int) -> list[OutcomeResult | CueAPIError]:
    return _outcome_results(call, data.get("settled") if isinstance(data, dict) else None, count)


def _claimed_items(call: Call, data: Any) -> list[dict[str, Any]]:
    """The claim answers in `data`: one (`{"execution_id", ...}`) or many (claim.many)."""
    if not isinstance(data, dict):
        raise routes.invalid_answer(call, ValueError("the claim answer is not an object"))
    if isinstance(data.get("executions"), list):
        return [item for item in data["executions"] if isinstance(item, dict)]
    if "execution_id" in data:
        return [data]
    if data.get("claimed") is False:
        return []
    raise routes.invalid_answer(call, ValueError("no execution_id in the claim answer"))


def _claimed_from(answer: dict[str, Any]) -> Claimed:
    """A Claimed from a claim answer, normalising `attempts` (claims including this one)."""
    fields = answer  # copied only when a field is filled in (`.raw` is what was read)
    if fields.get("attempts") is None and isinstance(fields.get("attempt"), int):
        fields = {**fields, "attempts": fields["attempt"]}
    if fields.get("task") is None and isinstance(fields.get("payload"), dict):
        fields = {**fields, "task": _str_or_none(fields["payload"].get("task"))}
    return decode_model(fields, Claimed)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _complete(st: FlowState, answers: list[dict[str, Any]]) -> Flow[list[Claimed]]:
    """Claimed executions with their payload: a GET for each answer that has none."""
    claimed: list[Claimed] = []
    for answer in answers:
        if "payload" in answer:
            claimed.append(_claimed_from(answer))
            continue
        exe = yield from request_model(st, routes.get_execution(answer["execution_id"]), Execution)
        claimed.append(
            _claimed_from(
                {
                    **exe.raw,
                    **answer,
                    "cue_id": exe.cue_id,
                    "task": exe.task,
                    "payload": exe.payload or {},
                    "attempts": exe.attempts,
                    "scheduled_for": exe.scheduled_for,
                }
            )
        )
    return claimed


def _from_listing(item: Claimable, answer: dict[str, Any]) -> Claimed:
    # The listing already carries the payload: no GET needed after a claim by id.
    return _claimed_from(
        {
            **item.raw,
            **answer,
            "cue_id": item.cue_id,
            "task": item.task if item.task is not None else _str_or_none(item.payload.get("task")),
            "payload": item.payload,
            "attempts": item.attempt + 1,
            "scheduled_for": item.scheduled_for,
        }
    )


def _plain_claim_once(
    st: FlowState,
    *,
    worker_id: str,
    task: str | None,
    agent: str | None,
    limit: int,
) -> Flow[list[Claimed]]:
    """One round of the plain contract: up to `limit` claims, [] when none could be had."""
    if task is None and agent is None:
        answers: list[dict[str, Any]] = []
        while len(answers) < limit:
            call = routes.claim_next(worker_id=worker_id)
            try:
                data = yield from request(st, call)
            except ClaimFailed:
                break
            answers.extend(_claimed_items(call, data))
        return (yield from _complete(st, answers))

    # The hosted claim route takes no filter: list with it server-side, claim the oldest by id.
    got: list[Claimed] = []
    for _ in range(MAX_RELISTS):
        listing = yield from list_claimable(st, task=task, agent=agent)
        if not listing:
            break
        misses = 0
        for item in listing:
            call = routes.claim(item.execution_id, worker_id=worker_id)
            try:
                data = yield from request(st, call)
            except (ClaimFailed, NotFound):  # taken by another worker (or gone) meanwhile
                misses += 1
                if misses >= MAX_CLAIM_MISSES:
                    break
                continue
            got.append(_from_listing(item, _claimed_items(call, data)[0]))
            if len(got) >= limit:
                break
        if got:
            break
    return got


def claim_next(
    st: FlowState,
    *,
    worker_id: str,
    task: str | None,
    agent: str | None,
    wait: float | None,
    limit: int | None,
    settle: Sequence[OutcomeRequest] = (),
    clock: Callable[[], float] = time.monotonic,
) -> Flow[ClaimResult]:
    """Claim the oldest claimable execution(s), optionally of one task, waiting up to `wait` s.

    With the extensions (`claim.task` for a filter, `claim.many` for a
    limit over 1, `claim.wait` for a wait, `claim.payload` to skip the GET)
    this is one `POST /v1/executions/claim`, repeated only to wait past the
    server's 30 s bound. Otherwise it follows the plain contract: list with
    the filter, claim by id, try the next on 409, and poll with a growing
    pause (50 ms to 1 s) until the wait ends. Both give the same result.
    """
    exts = st.extensions
    if exts is None or not st.has_key:  # probed once per client: no flow for it after that
        exts = yield from _authed_extensions(st)
    if settle and "claim.settle" not in exts:
        raise ExtensionNotAvailable("claim.settle")
    carried = [{"execution_id": o.execution_id, **_outcome_body(o)} for o in settle] or None
    settled: list[OutcomeResult | CueAPIError] = []
    want = max(1, limit or 1)
    filtered = task is not None or agent is not None
    server_side = (not filtered or "claim.task" in exts) and (want == 1 or "claim.many" in exts)
    long_poll = bool(wait) and "claim.wait" in exts
    deadline = clock() + (wait or 0.0)
    pause = POLL_MIN
    while True:
        if server_side:
            remaining = deadline - clock()
            hold = min(remaining, routes.MAX_CLAIM_WAIT) if long_poll and remaining > 0 else None
            call = routes.claim_next(
                worker_id=worker_id,
                task=task,
                agent=agent,
                wait=round(hold, 3) if hold else None,
                limit=want if want > 1 else None,
                settle=carried,
            )
            try:
                data = yield from request(st, call)
                if carried is not None:  # recorded: the next repeat carries none
                    settled, carried = _settled(call, data, len(carried)), None
                answers = _claimed_items(call, data)
                if all("payload" in answer for answer in answers):  # claim.payload: no GETs
                    claimed = [_claimed_from(answer) for answer in answers]
                else:
                    claimed = yield from _complete(st, answers)
            except ClaimFailed:
                claimed = []
        else:
            claimed = yield from _plain_claim_once(
                st, worker_id=worker_id, task=task, agent=agent, limit=want
            )
        if claimed:
            return ClaimResult(claimed=True, executions=claimed, task=task, settled=settled)
        remaining = deadline - clock()
        if remaining <= 0:
            reason = "no_executions_for_task" if task is not None else "no_executions"
            return ClaimResult(claimed=False, reason=reason, task=task, settled=settled)
        if not (server_side and long_poll):
            yield Sleep(min(pause, remaining))
            pause = min(pause * 2, POLL_MAX)


# -- workers ------------------------------------------------------------------------------


def redrive(st: FlowState, execution_id: str) -> Flow[Redriven]:
    yield from _require(st, "executions.redrive")
    return (yield from request_model(st, routes.redrive(execution_id), Redriven))


def release(
    st: FlowState, execution_ids: Sequence[str], *, worker_id: str
) -> Flow[list[Released | CueAPIError]]:
    """Hand claimed executions back, per 100; each item's error is returned in its place."""
    yield from _require(st, "executions.release")
    results: list[Released | CueAPIError] = []
    for chunk in _chunks(execution_ids):
        call = routes.release(list(chunk), worker_id=worker_id)
        data = yield from request(st, call)
        answers = data.get("results") if isinstance(data, dict) else None
        if not isinstance(answers, list) or len(answers) != len(chunk):
            raise routes.invalid_answer(call, ValueError("results do not match the ids"))
        for answer in answers:
            if isinstance(answer, dict) and "error" in answer:
                results.append(routes.item_error(answer))
            else:
                results.append(_decode(call, answer, Released))
    return results


def list_workers(st: FlowState) -> Flow[list[Worker]]:
    yield from _require(st, "workers.list")
    call = routes.list_workers()
    data = yield from request(st, call)
    return _decode_list(call, data, "workers", Worker)
