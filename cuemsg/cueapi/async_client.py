"""`AsyncCueClient` and its resources: the async CueAPI client over `httpx.AsyncClient`
(sending through `AsyncKeepAliveTransport` by default).

It runs the same flows as `CueClient` (`_flows.py`) on the shared base
(`_base.py`); only sending and sleeping between retries are its own.
"""

from __future__ import annotations

import builtins
from collections.abc import Generator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import anyio
import httpx

from cuemsg._exceptions import CueAPIError
from cuemsg.cueapi import _flows as flows
from cuemsg.cueapi import _routes as routes
from cuemsg.cueapi._async_transport import AsyncKeepAliveTransport, default_async_transport
from cuemsg.cueapi._base import DEFAULT_LIMITS, DEFAULT_TIMEOUT, _BaseClient, _Resource
from cuemsg.cueapi._http11 import reply
from cuemsg.cueapi._retry import DEFAULT_MAX_RETRIES
from cuemsg.cueapi._routes import Answered, Call, Send, Step
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

__all__ = ["AsyncCueClient", "AsyncCues", "AsyncExecutions", "AsyncWorkers"]

_T = TypeVar("_T")


class AsyncCueClient(_BaseClient):
    """The asynchronous twin of `CueClient` (an `httpx.AsyncClient` over `AsyncKeepAliveTransport`).

    Same arguments and resources as `CueClient` (the default transport is
    `AsyncKeepAliveTransport`, httpx's own with a proxy in the environment;
    `transport=` takes an `httpx.AsyncBaseTransport`); every call is awaited, and
    `aclose()` / `async with` replace `close()` / `with`. Works on asyncio and trio.
    """

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        max_retries: int = DEFAULT_MAX_RETRIES,
        use_extensions: bool = True,
        http_client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
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
        # As `CueClient`: requests go straight to a transport made here (see `_send`).
        self._transport: httpx.AsyncBaseTransport | None = None
        if http_client is not None:
            self._http = http_client
        else:
            if transport is None:
                transport = default_async_transport()
            if transport is None:
                self._http = httpx.AsyncClient(timeout=timeout, limits=DEFAULT_LIMITS)
            else:
                self._http = httpx.AsyncClient(transport=transport, timeout=timeout)
                self._transport = transport
        self._init_building(self._http)
        self._init_direct(isinstance(self._transport, AsyncKeepAliveTransport))
        self.cues = AsyncCues(self)
        self.executions = AsyncExecutions(self)
        self.workers = AsyncWorkers(self)

    async def __aenter__(self) -> AsyncCueClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Close the connection pool (unless it came from `http_client=`)."""
        if self._owns_http:
            await self._http.aclose()

    async def _send(self, call: Call) -> Answered:
        transport = self._transport
        if transport is None:
            request = self._http.build_request(**self._request_args(call))
            self.request_count += 1
            return await self._http.send(request)
        if self._http.is_closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        direct = self.encode_call(call)
        if direct is not None:  # the bytes straight to our transport (see `encode_call`)
            assert isinstance(transport, AsyncKeepAliveTransport) and self.origin is not None
            self.request_count += 1
            head, content = await transport.exchange(self.origin, direct[0], call.method, direct[1])
            return reply(head, content)
        request = self._build_request(call)
        self.request_count += 1
        if request.url.userinfo:  # user:pass@ in the URL: httpx's auth
            return await self._http.send(request)
        # What `httpx.AsyncClient.send` would do for a client made here, without its
        # layers (see `CueClient._send`).
        response = await transport.handle_async_request(request)
        try:
            response.request = request
            await response.aread()
        except BaseException:
            await response.aclose()
            raise
        return response

    async def _run(self, flow: Generator[Step, Any, _T]) -> _T:
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
                        value = await self._send(step.call)
                    except httpx.TransportError as err:
                        exc = err
                else:
                    await anyio.sleep(step.seconds)
        finally:
            flow.close()

    @property
    def extensions(self) -> frozenset[str]:
        """The extensions probed so far (empty if use_extensions=False).

        Raises:
            RuntimeError: not probed yet: `await client.load_extensions()` first
                (any call that needs them probes them too).
        """
        if self._st.extensions is None:
            raise RuntimeError("extensions not probed yet: await client.load_extensions() first")
        return self._st.extensions

    async def load_extensions(self) -> frozenset[str]:
        """Probe `/v1/info` once (cached) and return the extensions the server lists."""
        return await self._run(flows.extensions(self._st))

    async def info(self) -> Info:
        """See `CueClient.info`."""
        return await self._run(flows.info(self._st))

    async def register(self, email: str) -> dict[str, Any]:
        """See `CueClient.register`."""
        result: dict[str, Any] = await self._run(flows.request(self._st, routes.register(email)))
        return result


class AsyncCues(_Resource):
    """Async twin of `Cues`."""

    _client: AsyncCueClient

    async def create(
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
        """See `Cues.create`."""
        call = routes.create_cue(
            name,
            transport=transport,
            payload=payload,
            schedule=schedule,
            description=description,
            retry=retry,
            callback=callback,
        )
        return await self._client._run(flows.request_model(self._st, call, Cue))

    async def get(self, cue_id: str) -> Cue:
        """See `Cues.get`."""
        return await self._client._run(flows.request_model(self._st, routes.get_cue(cue_id), Cue))

    async def list(
        self, *, status: str | None = None, limit: int | None = None, offset: int | None = None
    ) -> CueList:
        """See `Cues.list`."""
        call = routes.list_cues(status=status, limit=limit, offset=offset)
        return await self._client._run(flows.request_model(self._st, call, CueList))

    async def update(self, cue_id: str, **changes: Any) -> Cue:
        """See `Cues.update`."""
        call = routes.update_cue(cue_id, changes)
        return await self._client._run(flows.request_model(self._st, call, Cue))

    async def delete(self, cue_id: str) -> None:
        """See `Cues.delete`."""
        await self._client._run(flows.request(self._st, routes.delete_cue(cue_id)))

    async def pause(self, cue_id: str) -> Cue:
        """See `Cues.pause`."""
        return await self.update(cue_id, status="paused")

    async def resume(self, cue_id: str) -> Cue:
        """See `Cues.resume`."""
        return await self.update(cue_id, status="active")

    async def fire(
        self,
        cue_id: str,
        payload_override: dict[str, Any] | None = None,
        merge_strategy: str | None = None,
        *,
        send_at: datetime | str | float | None = None,
        idempotency_key: str | None = None,
    ) -> FireResult:
        """See `Cues.fire`."""
        body = routes.fire_body(
            payload_override=payload_override,
            merge_strategy=merge_strategy,
            send_at=send_at,
            idempotency_key=idempotency_key,
        )
        call = routes.fire(cue_id, body)
        return await self._client._run(flows.request_model(self._st, call, FireResult))

    async def fire_many(self, fires: Sequence[FireRequest]) -> builtins.list[FireResult]:
        """See `Cues.fire_many`."""
        return await self._client._run(flows.fire_many(self._st, fires))


class AsyncExecutions(_Resource):
    """Async twin of `Executions`."""

    _client: AsyncCueClient

    async def list(
        self,
        *,
        cue_id: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> ExecutionList:
        """See `Executions.list`."""
        call = routes.list_executions(cue_id=cue_id, status=status, limit=limit, offset=offset)
        return await self._client._run(flows.request_model(self._st, call, ExecutionList))

    async def get(self, execution_id: str) -> Execution:
        """See `Executions.get`."""
        call = routes.get_execution(execution_id)
        return await self._client._run(flows.request_model(self._st, call, Execution))

    async def redrive(self, execution_id: str) -> Redriven:
        """See `Executions.redrive`."""
        return await self._client._run(flows.redrive(self._st, execution_id))

    async def release(
        self, execution_ids: Sequence[str], *, worker_id: str
    ) -> builtins.list[Released | CueAPIError]:
        """See `Executions.release`."""
        return await self._client._run(flows.release(self._st, execution_ids, worker_id=worker_id))

    async def list_claimable(
        self, *, task: str | None = None, agent: str | None = None
    ) -> builtins.list[Claimable]:
        """See `Executions.list_claimable`."""
        return await self._client._run(flows.list_claimable(self._st, task=task, agent=agent))

    async def claim(self, execution_id: str, *, worker_id: str) -> Claimed:
        """See `Executions.claim`."""
        return await self._client._run(flows.claim(self._st, execution_id, worker_id=worker_id))

    async def claim_next(
        self,
        *,
        worker_id: str,
        task: str | None = None,
        agent: str | None = None,
        wait: float | None = None,
        limit: int | None = None,
        settle: Sequence[OutcomeRequest] = (),
    ) -> ClaimResult:
        """See `Executions.claim_next`."""
        flow = flows.claim_next(
            self._st,
            worker_id=worker_id,
            task=task,
            agent=agent,
            wait=wait,
            limit=limit,
            settle=settle,
        )
        return await self._client._run(flow)

    async def heartbeat(self, execution_id: str, *, worker_id: str) -> Heartbeat:
        """See `Executions.heartbeat`."""
        call = routes.heartbeat(execution_id, worker_id=worker_id)
        return await self._client._run(flows.request_model(self._st, call, Heartbeat))

    async def report_outcome(
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
        """See `Executions.report_outcome`."""
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
        return await self._client._run(flow)

    async def report_outcomes(
        self, outcomes: Sequence[OutcomeRequest], *, worker_id: str
    ) -> builtins.list[OutcomeResult | CueAPIError]:
        """See `Executions.report_outcomes`."""
        flow = flows.report_outcomes(self._st, outcomes, worker_id=worker_id)
        return await self._client._run(flow)


class AsyncWorkers(_Resource):
    """Async twin of `Workers`."""

    _client: AsyncCueClient

    async def heartbeat(self, worker_id: str, handlers: Sequence[str]) -> WorkerHeartbeat:
        """See `Workers.heartbeat`."""
        call = routes.worker_heartbeat(worker_id, list(handlers))
        return await self._client._run(flows.request_model(self._st, call, WorkerHeartbeat))

    async def list(self) -> builtins.list[Worker]:
        """See `Workers.list`."""
        return await self._client._run(flows.list_workers(self._st))
