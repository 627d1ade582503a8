"""`CueClient` and its resources (`Cues`, `Executions`, `Workers`): the sync CueAPI client.

Both clients run the same flows (`_flows.py`): requests are built and answers
read in one place, and what the two share (configuration, request arguments,
flow stepping) sits on `_BaseClient` in `_base.py`. This module holds only the
sync side: sending over `httpx.Client` and sleeping between retries. The
async twin, `AsyncCueClient`, lives in `async_client.py` and is re-exported
here so `from cuemsg.cueapi.client import AsyncCueClient` keeps working.

Example:
    ```python
    from cuemsg.cueapi import CueClient

    with CueClient() as client:  # CUEAPI_API_KEY / CUEAPI_BASE_URL from the environment
        cue = client.cues.create("inbox", payload={"task": "inbox"})
        client.cues.fire(cue.id, {"text": "hi"}, idempotency_key="msg-1")
        got = client.executions.claim_next(worker_id="w1", task="inbox", wait=5)
        if got.claimed:
            exe = got.executions[0]
            client.executions.report_outcome(exe.execution_id, worker_id="w1", success=True)
    ```
"""

from __future__ import annotations

import builtins
import time
from collections.abc import Generator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import httpx

from cuemsg._exceptions import CueAPIError
from cuemsg.cueapi import _flows as flows
from cuemsg.cueapi import _routes as routes
from cuemsg.cueapi._base import (
    API_KEY_ENV,
    BASE_URL_ENV,
    DEFAULT_BASE_URL,
    DEFAULT_LIMITS,
    DEFAULT_TIMEOUT,
    _BaseClient,
    _default_transport,
    _Resource,
)
from cuemsg.cueapi._http11 import reply
from cuemsg.cueapi._retry import DEFAULT_MAX_RETRIES
from cuemsg.cueapi._routes import Answered, Call, Send, Step
from cuemsg.cueapi._transport import KeepAliveTransport
from cuemsg.cueapi.async_client import AsyncCueClient, AsyncCues, AsyncExecutions, AsyncWorkers
from cuemsg.cueapi.models import (
    Claimable,
    Claimed,
    ClaimResult,
    Cue,
    CueList,
    Execution,
    ExecutionList,
    FireRequest,
    FireResult,
    Heartbeat,
    Info,
    OutcomeRequest,
    OutcomeResult,
    Redriven,
    Released,
    Worker,
    WorkerHeartbeat,
)

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_TIMEOUT",
    "AsyncCueClient",
    "AsyncCues",
    "AsyncExecutions",
    "AsyncWorkers",
    "CueClient",
    "Cues",
    "Executions",
    "Workers",
]

_T = TypeVar("_T")


class CueClient(_BaseClient):
    """A synchronous CueAPI client (an `httpx.Client` over a keep-alive `KeepAliveTransport`).

    Args:
        api_key: the tenant's key; defaults to `$CUEAPI_API_KEY`. Only
            `register` and `info` work without one (others raise `MissingAPIKey`).
        base_url: defaults to `$CUEAPI_BASE_URL`, then `https://api.cueapi.ai`.
        timeout: seconds for connect, read, write and pool waits; a long-poll
            claim reads for its `wait` on top of this.
        max_retries: repeats of a failed request when safe (see `_retry.py`); 0 for none.
        use_extensions: probe `/v1/info` once and use the embedded server's
            extensions when listed; False keeps to the plain contract and never probes.
        http_client: an `httpx.Client` to send with (the caller closes it); every
            request goes through its `send` (auth, event hooks, cookies, mounts).
        transport: an httpx transport for the client made here (e.g. `httpx.MockTransport`,
            or `httpx.HTTPTransport(proxy=...)` for a proxy). Default: a
            `KeepAliveTransport` (stdlib `http.client`, no proxy support), or
            httpx's own when `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` is set.

    Attributes:
        cues: `Cues` resource. executions: `Executions`. workers: `Workers`.
        request_count: HTTP requests sent by this client so far, retries included.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        use_extensions: bool = True,
        http_client: httpx.Client | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(
            api_key,
            base_url,
            timeout=timeout,
            max_retries=max_retries,
            use_extensions=use_extensions,
        )
        if http_client is not None and transport is not None:
            raise ValueError("pass http_client= or transport=, not both")
        self._owns_http = http_client is None
        # Where a request goes without `httpx.Client.send` (see `_send`): only a
        # client made here, whose transport is known and which has no auth, event
        # hooks, redirects or mounts to apply.
        self._transport: httpx.BaseTransport | None = None
        if http_client is not None:
            self._http = http_client
        else:
            if transport is None:
                transport = _default_transport()
            if transport is None:
                self._http = httpx.Client(timeout=timeout, limits=DEFAULT_LIMITS)
            else:
                self._http = httpx.Client(transport=transport, timeout=timeout)
                self._transport = transport
        self._init_building(self._http)
        self._init_direct(isinstance(self._transport, KeepAliveTransport))
        self.cues = Cues(self)
        self.executions = Executions(self)
        self.workers = Workers(self)

    def __enter__(self) -> CueClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool (unless it came from `http_client=`)."""
        if self._owns_http:
            self._http.close()

    def _send(self, call: Call) -> Answered:
        transport = self._transport
        if transport is None:
            request = self._http.build_request(**self._request_args(call))
            self.request_count += 1
            return self._http.send(request)
        if self._http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        direct = self.encode_call(call)
        if direct is not None:  # the bytes straight to our transport (see `encode_call`)
            assert isinstance(transport, KeepAliveTransport) and self.origin is not None
            self.request_count += 1
            head, content = transport.exchange(self.origin, direct[0], call.method, direct[1])
            return reply(head, content)
        request = self._build_request(call)
        self.request_count += 1
        if request.url.userinfo:  # user:pass@ in the URL: httpx's auth
            return self._http.send(request)
        # What `httpx.Client.send` would do for a client made here, without its
        # layers: no auth, hooks or redirects are configured, and the cookie jar
        # (which CueAPI never fills) is left out.
        response = transport.handle_request(request)
        try:
            response.request = request
            response.read()
        except BaseException:
            response.close()
            raise
        return response

    def _run(self, flow: Generator[Step, Any, _T]) -> _T:
        value: Any = None
        exc: BaseException | None = None
        try:
            while True:
                try:  # `_ops.advance`, written in: once per step of every request
                    step = flow.throw(exc) if exc is not None else flow.send(value)
                except StopIteration as stop:
                    result: _T = stop.value
                    return result
                value, exc = None, None
                if isinstance(step, Send):
                    try:
                        value = self._send(step.call)
                    except httpx.TransportError as err:
                        exc = err
                else:
                    time.sleep(step.seconds)
        finally:
            flow.close()

    @property
    def extensions(self) -> frozenset[str]:
        """The extensions the server lists (probed once, lazily; empty if use_extensions=False)."""
        return self._run(flows.extensions(self._st))

    def info(self) -> Info:
        """`GET /v1/info` (no key needed): the server's version and extensions."""
        return self._run(flows.info(self._st))

    def register(self, email: str) -> dict[str, Any]:
        """Register a new tenant (no key needed).

        Returns:
            The answer, with at least `api_key` and `email`.
        """
        result: dict[str, Any] = self._run(flows.request(self._st, routes.register(email)))
        return result


class Cues(_Resource):
    """`client.cues`: create, read, change and fire cues."""

    _client: CueClient

    def create(
        self,
        name: str,
        *,
        transport: str = "worker",
        payload: dict[str, Any] | None = None,
        schedule: dict[str, Any] | None = None,
        description: str | None = None,
        retry: dict[str, Any] | None = None,
        callback: dict[str, Any] | None = None,
    ) -> Cue:
        """Create a cue (`POST /v1/cues`).

        Args:
            name: unique per tenant (a duplicate raises `Conflict` `cue_name_taken`).
            transport: `"worker"` (claimed by workers) or `"webhook"` (needs `callback`).
            payload: the cue's payload (`{}` by default on the server).
            schedule: `{"type": "once", "at": ts}` or
                `{"type": "recurring", "cron": "...", "timezone": "UTC"}`.
            description: free text.
            retry: `{"max_attempts": 1..10, "backoff_minutes": [...]}`.
            callback: `{"url": ...}` for webhook cues.

        Raises:
            Conflict: the name is taken. ValidationError: a field is invalid.
        """
        call = routes.create_cue(
            name,
            transport=transport,
            payload=payload,
            schedule=schedule,
            description=description,
            retry=retry,
            callback=callback,
        )
        return self._client._run(flows.request_model(self._st, call, Cue))

    def get(self, cue_id: str) -> Cue:
        """Get one cue. Raises `NotFound` if it does not exist (for this tenant)."""
        return self._client._run(flows.request_model(self._st, routes.get_cue(cue_id), Cue))

    def list(
        self, *, status: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> CueList:
        """List cues, optionally by `status` (`"active"`, `"paused"`), one page at a time."""
        call = routes.list_cues(status=status, limit=limit, offset=offset)
        return self._client._run(flows.request_model(self._st, call, CueList))

    def update(self, cue_id: str, **changes: Any) -> Cue:
        """Change a cue (`PATCH`): any of name, description, status, schedule, payload, retry."""
        call = routes.update_cue(cue_id, changes)
        return self._client._run(flows.request_model(self._st, call, Cue))

    def delete(self, cue_id: str) -> None:
        """Delete a cue. Raises `NotFound` if it does not exist."""
        self._client._run(flows.request(self._st, routes.delete_cue(cue_id)))

    def pause(self, cue_id: str) -> Cue:
        """Set the cue's status to `paused` (manual fires still work)."""
        return self.update(cue_id, status="paused")

    def resume(self, cue_id: str) -> Cue:
        """Set the cue's status back to `active`."""
        return self.update(cue_id, status="active")

    def fire(
        self,
        cue_id: str,
        payload_override: dict[str, Any] | None = None,
        merge_strategy: str | None = None,
        *,
        send_at: datetime | str | float | None = None,
        idempotency_key: str | None = None,
    ) -> FireResult:
        """Fire a cue: make one execution now or at `send_at`.

        Args:
            cue_id: the cue to fire.
            payload_override: this execution's payload (merged into the cue's by default).
            merge_strategy: `"merge"` or `"replace"`; not sent unless given.
            send_at: when it becomes claimable: a `datetime` (naive = UTC), an ISO
                8601 string or UNIX seconds; past or None means now.
            idempotency_key: makes the fire safe to retry: the same key and body
                within 24 h answer with the first execution. Without a key a fire
                is never repeated after an ambiguous failure.

        Raises:
            NotFound: no such cue. Conflict: the key was used with another body.
        """
        body = routes.fire_body(
            payload_override=payload_override,
            merge_strategy=merge_strategy,
            send_at=send_at,
            idempotency_key=idempotency_key,
        )
        call = routes.fire(cue_id, body)
        return self._client._run(flows.request_model(self._st, call, FireResult))

    def fire_many(self, fires: Sequence[FireRequest]) -> builtins.list[FireResult]:
        """Fire many, in order: `POST /v1/fire` per 100 with `fire.batch`, else one by one.

        With `fire.batch` a chunk is all-or-nothing (a bad item fails it with 422
        and its index in `field`); without it, the first error is raised and
        the fires before it stay made.
        """
        return self._client._run(flows.fire_many(self._st, fires))


class Executions(_Resource):
    """`client.executions`: list, claim, heartbeat and close executions."""

    _client: CueClient

    def list(
        self,
        *,
        cue_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> ExecutionList:
        """List executions, optionally of one cue and/or in one status."""
        call = routes.list_executions(cue_id=cue_id, status=status, limit=limit, offset=offset)
        return self._client._run(flows.request_model(self._st, call, ExecutionList))

    def get(self, execution_id: str) -> Execution:
        """Get one execution. Raises `NotFound` if it does not exist."""
        call = routes.get_execution(execution_id)
        return self._client._run(flows.request_model(self._st, call, Execution))

    def redrive(self, execution_id: str) -> Redriven:
        """Send a dead letter (a `failed` execution) again, as a new execution with the
        same message (extension `executions.redrive`); a second call fires nothing.

        Raises:
            ExtensionNotAvailable: the server does not list `executions.redrive`.
            NotFound: no such execution.
            Conflict: it is not a dead letter (code `not_dead_letter`).
        """
        return self._client._run(flows.redrive(self._st, execution_id))

    def release(
        self, execution_ids: Sequence[str], *, worker_id: str
    ) -> builtins.list[Released | CueAPIError]:
        """Hand back executions `worker_id` claimed and will not handle (extension
        `executions.release`): each is pending again at once, its attempt not counted.
        Each item's error is returned in its place, not raised: `Forbidden` (another
        worker holds it), `Conflict` (not delivering), `NotFound`.

        Raises:
            ExtensionNotAvailable: the server does not list `executions.release`.
        """
        return self._client._run(flows.release(self._st, execution_ids, worker_id=worker_id))

    def list_claimable(
        self, *, task: str | None = None, agent: str | None = None
    ) -> builtins.list[Claimable]:
        """Claimable executions (at most 50, oldest first), filtered by the server."""
        return self._client._run(flows.list_claimable(self._st, task=task, agent=agent))

    def claim(self, execution_id: str, *, worker_id: str) -> Claimed:
        """Claim one execution by id (one request; payload fields only with `claim.payload`).

        Raises:
            ClaimFailed: someone else holds it, or it is not claimable.
        """
        return self._client._run(flows.claim(self._st, execution_id, worker_id=worker_id))

    def claim_next(
        self,
        *,
        worker_id: str,
        task: str | None = None,
        agent: str | None = None,
        wait: float | None = None,
        limit: int | None = None,
        settle: Sequence[OutcomeRequest] = (),
    ) -> ClaimResult:
        """Claim the oldest claimable execution(s), optionally of one task or agent.

        Args:
            worker_id: this worker's stable name (the same on heartbeat and outcome).
            task: claim only executions whose payload `task` is this.
            agent: claim only executions whose payload `agent` is this.
            wait: seconds to wait for one to arrive (long-poll with `claim.wait`,
                else polling from 50 ms up to 1 s apart).
            limit: claim up to this many at once (one request with `claim.many`).
            settle: outcomes of this worker's executions to record first, in the
                same request (`claim.settle`); each item's result is in `settled`.

        Returns:
            `ClaimResult(claimed=True, executions=[...])`, or `claimed=False`
            with `reason` `"no_executions_for_task"` / `"no_executions"`.

        Raises:
            ExtensionNotAvailable: `settle` given and the server does not list `claim.settle`.
        """
        flow = flows.claim_next(
            self._st,
            worker_id=worker_id,
            task=task,
            agent=agent,
            wait=wait,
            limit=limit,
            settle=settle,
        )
        return self._client._run(flow)

    def heartbeat(self, execution_id: str, *, worker_id: str) -> Heartbeat:
        """Extend the lease (sends `X-Worker-Id`).

        Raises:
            Forbidden: another worker holds the lease now.
            Conflict: the execution is not being delivered (`execution_not_claiming`).
        """
        call = routes.heartbeat(execution_id, worker_id=worker_id)
        return self._client._run(flows.request_model(self._st, call, Heartbeat))

    def report_outcome(
        self,
        execution_id: str,
        *,
        worker_id: str,
        success: bool,
        result: str | None = None,
        error: str | None = None,
        metadata: dict[str, Any] | None = None,
        reply: FireRequest | None = None,
    ) -> OutcomeResult:
        """Record the outcome, once (sends `X-Worker-Id`; `result`/`error` at most 2000 chars).

        With `reply`, the reply is fired in the same request and transaction
        (extension `outcome.reply`): both happen or neither, and `REPLY_TOKEN`
        in `result`, `error` or `metadata` is replaced by the reply's execution
        id; the answer's `reply` is that fire.

        Raises:
            ExtensionNotAvailable: `reply` given and the server does not list `outcome.reply`.
            Conflict: `outcome_already_recorded` or `execution_not_claiming`.
            Forbidden: the lease passed to another worker.
        """
        outcome = OutcomeRequest(
            execution_id=execution_id,
            success=success,
            result=result,
            error=error,
            metadata=metadata,
        )
        flow = flows.report_outcome(
            self._st, execution_id, outcome, worker_id=worker_id, reply=reply
        )
        return self._client._run(flow)

    def report_outcomes(
        self, outcomes: Sequence[OutcomeRequest], *, worker_id: str
    ) -> builtins.list[OutcomeResult | CueAPIError]:
        """Record many outcomes; each item's error is returned in its place, not raised.

        One request per 100 with `outcome.batch`, else one per outcome.
        """
        return self._client._run(flows.report_outcomes(self._st, outcomes, worker_id=worker_id))


class Workers(_Resource):
    """`client.workers`: worker daemon heartbeats and (embedded server) the worker list."""

    _client: CueClient

    def heartbeat(self, worker_id: str, handlers: Sequence[str]) -> WorkerHeartbeat:
        """Register a worker daemon and the task handlers it runs."""
        call = routes.worker_heartbeat(worker_id, list(handlers))
        return self._client._run(flows.request_model(self._st, call, WorkerHeartbeat))

    def list(self) -> builtins.list[Worker]:
        """Workers that heartbeated (extension `workers.list`).

        Raises:
            ExtensionNotAvailable: the server does not list `workers.list`.
        """
        return self._client._run(flows.list_workers(self._st))
