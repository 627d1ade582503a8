"""The CueAPI routes as data, with no I/O.

Each builder returns a `Call`: method, path, query, JSON body, extra
headers, and whether repeating it after an ambiguous failure (a lost
answer, a 5xx) is safe. `parse_answer` turns an HTTP status, headers and
body into decoded JSON or the `CueAPIError` subclass that fits; the clients
only move bytes.

What is marked safe to retry, and why (see `_retry.py` for the policy):
- GET, and PATCH (it sets absolute values: repeating it lands in the same state);
- DELETE (a repeat that finds the cue gone answers 404, read as done);
- execution and worker heartbeats (extending a lease twice is harmless);
- a fire only with an `idempotency_key` (the server then makes one execution);
- never: creating a cue, a claim (a lost answer may hide a lease we hold),
  an outcome (write-once: a repeat answers 409), register.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

import msgspec

from cuemsg._exceptions import CueAPIError

__all__ = [
    "Answered",
    "Call",
    "Send",
    "Sleep",
    "Step",
    "parse_answer",
    "parse_retry_after",
    "to_timestamp",
]

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode

WORKER_HEADER = "X-Worker-Id"
_NO_STATUSES: frozenset[int] = frozenset()
MAX_CLAIM_WAIT = 30.0  # the server's bound on `wait` (claim.wait)


@dataclass(frozen=True)
class Call:
    """One HTTP request to CueAPI, described as data."""

    method: str
    path: str
    params: dict[str, Any] = field(default_factory=dict)
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    retry_safe: bool = False
    auth: bool = True
    # A long-poll holds the answer back up to this many seconds: the read timeout grows by it.
    wait: float = 0.0
    # Statuses that mean "already done" when seen on a repeat (DELETE -> 404).
    done_on_repeat: frozenset[int] = frozenset()

    def __init__(
        self,
        method: str,
        path: str,
        params: dict[str, Any] | None = None,
        json: Any = None,
        headers: dict[str, str] | None = None,
        retry_safe: bool = False,
        auth: bool = True,
        wait: float = 0.0,
        done_on_repeat: frozenset[int] = _NO_STATUSES,
    ) -> None:
        # What the generated __init__ does (None: a new empty dict), a third of its cost:
        # a frozen dataclass's sets each field through object.__setattr__, and every
        # request builds a Call.
        fields = self.__dict__
        fields["method"] = method
        fields["path"] = path
        fields["params"] = {} if params is None else params
        fields["json"] = json
        fields["headers"] = {} if headers is None else headers
        fields["retry_safe"] = retry_safe
        fields["auth"] = auth
        fields["wait"] = wait
        fields["done_on_repeat"] = done_on_repeat

    def content(self) -> bytes | None:
        """The JSON body as bytes (None when the call has no body)."""
        return None if self.json is None else _encode(self.json)


class Answered(Protocol):
    """What a `Send` step is answered with: an `httpx.Response`, or the clients' lighter
    `_http11.Reply` for the requests they encode themselves."""

    @property
    def status_code(self) -> int: ...
    @property
    def headers(self) -> Any: ...  # with a case-insensitive `.get`
    @property
    def content(self) -> bytes: ...


@dataclass(frozen=True)
class Send:
    """Flow step: send `call` and hand back the answer (`Answered`), or throw its
    transport error (an `httpx.TransportError`)."""

    call: Call

    def __init__(self, call: Call) -> None:
        self.__dict__["call"] = call  # as Call's: the generated __init__ costs twice this


@dataclass(frozen=True)
class Sleep:
    """Flow step: wait `seconds` before going on."""

    seconds: float


Step = Send | Sleep


def _drop_none(**fields: Any) -> dict[str, Any]:
    return {k: v for k, v in fields.items() if v is not None}


def to_timestamp(value: datetime | str | float) -> str:
    """An ISO 8601 timestamp for `send_at`.

    Args:
        value: a `datetime` (naive means UTC), an ISO 8601 string (sent as
            given) or UNIX seconds.

    Raises:
        TypeError: any other type.
    """
    if isinstance(value, str):
        return value
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc).isoformat()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.fromtimestamp(value, tz=timezone.utc).isoformat()
    raise TypeError(
        f"send_at must be a datetime, an ISO 8601 string or UNIX seconds, not {value!r}"
    )


# -- discovery and auth -------------------------------------------------------------------


def info() -> Call:
    return Call("GET", "/v1/info", auth=False, retry_safe=True)


def register(email: str) -> Call:
    return Call("POST", "/v1/auth/register", json={"email": email}, auth=False)


# -- cues ---------------------------------------------------------------------------------


def create_cue(
    name: str,
    *,
    transport: str,
    payload: dict[str, Any] | None,
    schedule: dict[str, Any] | None,
    description: str | None,
    retry: dict[str, Any] | None,
    callback: dict[str, Any] | None,
) -> Call:
    body = _drop_none(
        name=name,
        transport=transport,
        payload=payload,
        schedule=schedule,
        description=description,
        retry=retry,
        callback=callback,
    )
    return Call("POST", "/v1/cues", json=body)


def get_cue(cue_id: str) -> Call:
    return Call("GET", f"/v1/cues/{cue_id}", retry_safe=True)


def list_cues(*, status: str | None, limit: int | None, offset: int | None) -> Call:
    params = _drop_none(status=status, limit=limit, offset=offset)
    return Call("GET", "/v1/cues", params=params, retry_safe=True)


def update_cue(cue_id: str, changes: dict[str, Any]) -> Call:
    return Call("PATCH", f"/v1/cues/{cue_id}", json=changes, retry_safe=True)


def delete_cue(cue_id: str) -> Call:
    return Call("DELETE", f"/v1/cues/{cue_id}", retry_safe=True, done_on_repeat=frozenset({404}))


def fire_body(
    *,
    payload_override: dict[str, Any] | None,
    merge_strategy: str | None,
    send_at: datetime | str | float | None,
    idempotency_key: str | None,
) -> dict[str, Any]:
    """The body of one fire: only the fields the caller chose (no default strategy)."""
    return _drop_none(
        payload_override=payload_override,
        merge_strategy=merge_strategy,
        send_at=None if send_at is None else to_timestamp(send_at),
        idempotency_key=idempotency_key,
    )


def fire(cue_id: str, body: dict[str, Any]) -> Call:
    # Only a keyed fire is safe to repeat: the server answers a repeat with the first execution.
    keyed = body.get("idempotency_key") is not None
    return Call("POST", f"/v1/cues/{cue_id}/fire", json=body, retry_safe=keyed)


def fire_batch(fires: list[dict[str, Any]]) -> Call:
    keyed = all(f.get("idempotency_key") is not None for f in fires)
    return Call("POST", "/v1/fire", json={"fires": fires}, retry_safe=keyed)


# -- executions ---------------------------------------------------------------------------


def list_executions(
    *, cue_id: str | None, status: str | None, limit: int | None, offset: int | None
) -> Call:
    params = _drop_none(cue_id=cue_id, status=status, limit=limit, offset=offset)
    return Call("GET", "/v1/executions", params=params, retry_safe=True)


def get_execution(execution_id: str) -> Call:
    return Call("GET", f"/v1/executions/{execution_id}", retry_safe=True)


def release(execution_ids: list[str], *, worker_id: str) -> Call:
    # Safe to retry: a second release of an execution finds it no longer held (409).
    return Call(
        "POST",
        "/v1/executions/release",
        json={"worker_id": worker_id, "execution_ids": execution_ids},
        retry_safe=True,
    )


def redrive(execution_id: str) -> Call:
    # Safe to retry: a second redrive of one dead letter fires nothing.
    return Call("POST", f"/v1/executions/{execution_id}/redrive", retry_safe=True)


def list_claimable(*, task: str | None, agent: str | None) -> Call:
    params = _drop_none(task=task, agent=agent)
    return Call("GET", "/v1/executions/claimable", params=params, retry_safe=True)


def claim(execution_id: str, *, worker_id: str) -> Call:
    return Call("POST", f"/v1/executions/{execution_id}/claim", json={"worker_id": worker_id})


def claim_next(
    *,
    worker_id: str,
    task: str | None = None,
    agent: str | None = None,
    wait: float | None = None,
    limit: int | None = None,
    settle: list[dict[str, Any]] | None = None,
) -> Call:
    """`POST /v1/executions/claim`; task/agent/wait/limit/settle are extensions, sent only
    when given."""
    body = _drop_none(
        worker_id=worker_id, task=task, agent=agent, wait=wait, limit=limit, settle=settle
    )
    return Call("POST", "/v1/executions/claim", json=body, wait=wait or 0.0)


def heartbeat(execution_id: str, *, worker_id: str) -> Call:
    # X-Worker-Id always: without it the server skips the ownership check.
    return Call(
        "POST",
        f"/v1/executions/{execution_id}/heartbeat",
        headers={WORKER_HEADER: worker_id},
        retry_safe=True,
    )


def outcome_body(
    *,
    success: bool,
    result: str | None,
    error: str | None,
    metadata: dict[str, Any] | None,
) -> dict[str, Any]:
    return _drop_none(success=success, result=result, error=error, metadata=metadata)


def report_outcome(execution_id: str, body: dict[str, Any], *, worker_id: str) -> Call:
    return Call(
        "POST",
        f"/v1/executions/{execution_id}/outcome",
        json=body,
        headers={WORKER_HEADER: worker_id},
    )


def report_outcomes(outcomes: list[dict[str, Any]], *, worker_id: str) -> Call:
    return Call(
        "POST",
        "/v1/executions/outcomes",
        json={"outcomes": outcomes},
        headers={WORKER_HEADER: worker_id},
    )


# -- workers ------------------------------------------------------------------------------


def worker_heartbeat(worker_id: str, handlers: list[str]) -> Call:
    body = {"worker_id": worker_id, "handlers": list(handlers)}
    return Call("POST", "/v1/worker/heartbeat", json=body, retry_safe=True)


def list_workers() -> Call:
    return Call("GET", "/v1/workers", retry_safe=True)


# -- answers ------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=timezone.utc)
        ref = datetime.now(timezone.utc).timestamp() if now is None else now
        seconds = when.timestamp() - ref
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def decode_json(content: bytes) -> Any:
    """Decode a JSON body to builtins; None for an empty body.

    Raises:
        msgspec.DecodeError: the body is not JSON.
    """
    if not content or content.isspace():  # as `not content.strip()`, without a copy
        return None
    return _decode(content)


def parse_answer(status: int, headers: Any, content: bytes) -> Any:
    """Decoded JSON of a 2xx answer, or raise the `CueAPIError` the answer stands for.

    Args:
        status: HTTP status.
        headers: a mapping with `.get` (case-insensitive, as httpx's).
        content: the raw body.

    Raises:
        CueAPIError: a status of 400 or more (its subclass chosen by
            `CueAPIError.from_response`), or a 2xx body that is not JSON.
    """
    try:
        body = decode_json(content)
    except msgspec.DecodeError:
        if status < 400:
            raise CueAPIError(
                f"the server answered {status} with a body that is not JSON",
                status=status,
                code="invalid_response",
            ) from None
        body = None
    if status < 400:
        return body
    retry_after = parse_retry_after(headers.get("retry-after")) if status == 429 else None
    raise CueAPIError.from_response(status, body, retry_after)


def item_error(item: dict[str, Any]) -> CueAPIError:
    """The error of one failed item in a batch answer (`{"execution_id", "error": {...}}`)."""
    err = item.get("error")
    status = err.get("status") if isinstance(err, dict) else None
    return CueAPIError.from_response(status if isinstance(status, int) else 400, item)


def invalid_answer(call: Call, exc: Exception) -> CueAPIError:
    """The error for a 2xx answer whose shape the client cannot read."""
    return CueAPIError(
        f"unexpected answer to {call.method} {call.path}: {exc}",
        status=200,
        code="invalid_response",
    )
