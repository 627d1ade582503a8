"""`AsyncMailbox`: the asynchronous mailbox, a thin driver of `_core` over `AsyncCueClient`.

Runs on anyio (asyncio or trio). Its background work (lease renewals and
worker presence, the reply stream of `request()`) runs as tasks of a task
group that lives while the mailbox is entered, so use it as an async
context manager:

Example:
    ```python
    from cuemsg import AsyncCueClient, AsyncMailbox

    async with AsyncCueClient() as client:
        async with AsyncMailbox.open(client, "planner") as inbox:
            await inbox.send(writer_address, {"goal": "draft the intro"})
            async for msg in inbox.receive(wait=10):
                print(msg.sender, msg.body)    # acked when the loop moves on
            answer = await inbox.request(writer_address, {"q": "status?"}, timeout=30)
    ```
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar, cast, overload

import anyio
from anyio.abc import TaskGroup

from cuemsg._exceptions import MailboxError
from cuemsg.cueapi import AsyncCueClient, Redriven
from cuemsg.mailbox._core import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_POLL_WAIT,
    DEFAULT_PRESENCE_INTERVAL,
    DEFAULT_PRESENCE_TTL,
    DEFAULT_REQUEST_TIMEOUT,
    DEFAULT_RETRY_DELAY,
    AwaitReply,
    CallHandler,
    Deliver,
    Delivery,
    Drain,
    Flow,
    IdleWait,
    MailboxBase,
    MailboxConfig,
    MailboxCore,
    MailboxInfo,
    OnError,
    Op,
    Sent,
    Sleep,
    Spawn,
    StartReplies,
    WaitSlots,
    advance,
    open_mailbox,
)
from cuemsg.mailbox.dedupe import DedupeStore
from cuemsg.mailbox.redrive import redrive as redrive_flow
from cuemsg.mailbox.tracing import handler_span

__all__ = ["AsyncMailbox", "AsyncMessage"]

log = logging.getLogger("cuemsg.mailbox")

T = TypeVar("T")
R = TypeVar("R")


class AsyncMessage(Delivery[T]):
    """A message received by an `AsyncMailbox`; the async twin of `Message`."""

    def __init__(self, mailbox: AsyncMailbox, **fields: Any) -> None:
        super().__init__(**fields)
        self._mailbox = mailbox

    async def ack(self, result: str | None = None) -> None:
        """See `Message.ack`."""
        await self._mailbox.ack(self, result)

    async def reject(self, reason: str) -> None:
        """See `Message.reject`."""
        await self._mailbox.reject(self, reason)

    async def retry_later(self, delay: float = 1.0, reason: str = "") -> str | None:
        """See `Message.retry_later`."""
        return await self._mailbox.retry_later(self, delay, reason)

    async def reply(self, body: Any) -> str:
        """See `Message.reply`."""
        return await self._mailbox.reply(self, body)

    async def reply_error(self, type: str, message: str) -> str:
        """See `Message.reply_error`."""
        return await self._mailbox.reply_error(self, type, message)

    async def heartbeat(self) -> None:
        """See `Message.heartbeat`."""
        await self._mailbox.heartbeat(self)


class _Slots:
    """Handler slots of `serve()` (async)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._freed = anyio.Event()

    async def wait_free(self) -> int:
        while self.busy >= self.size:
            await self._freed.wait()
            self._freed = anyio.Event()
        return self.size - self.busy

    def give(self) -> None:
        self.busy -= 1
        self._freed.set()

    async def drain(self) -> None:
        while self.busy:
            await self._freed.wait()
            self._freed = anyio.Event()


class _Opening:
    """What `AsyncMailbox.open()` returns: await it, or enter it with `async with`."""

    def __init__(self, make: Callable[[], Awaitable[AsyncMailbox]]) -> None:
        self._make = make
        self._mailbox: AsyncMailbox | None = None

    def __await__(self) -> Generator[Any, None, AsyncMailbox]:
        return self._make().__await__()

    async def __aenter__(self) -> AsyncMailbox:
        self._mailbox = await self._make()
        return await self._mailbox.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._mailbox is not None
        await self._mailbox.__aexit__(exc_type, exc, tb)


class AsyncMailbox(MailboxBase):
    """An asynchronous mailbox: see `Mailbox` for the behaviour, which is the same.

    `async with AsyncMailbox.open(client, name) as mb:` opens it and runs its
    background tasks; `receive`, `serve` and `request` need that (`send`
    and settling do not).
    """

    def __init__(self, client: AsyncCueClient, info: MailboxInfo, config: MailboxConfig) -> None:
        self.client = client
        self._core = MailboxCore(
            info, config, event_factory=anyio.Event, make_message=self._message
        )
        self._wake = anyio.Event()  # heartbeat task: a lease was taken, or closing
        self._requests = anyio.Event()  # reply task: a request started waiting
        self._core.leases.on_hold = lambda: self._wake.set()
        self._core.acks.on_due = lambda: self._wake.set()
        self._core.router.on_expect = lambda: self._requests.set()
        self._tg: TaskGroup | None = None
        self._replies_started = False
        self._closed = False

    @classmethod
    def open(
        cls,
        client: AsyncCueClient,
        name: str,
        task: str | None = None,
        worker_id: str | None = None,
        *,
        poll_wait: float = DEFAULT_POLL_WAIT,
        dedupe: DedupeStore | None = None,
        on_error: OnError = "reject",
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_delay: float = DEFAULT_RETRY_DELAY,
        max_deliveries: int = DEFAULT_MAX_DELIVERIES,
        on_late_reply: Callable[[AsyncMessage[Any]], Any] | None = None,
        presence_interval: float = DEFAULT_PRESENCE_INTERVAL,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
    ) -> _Opening:
        """Open the mailbox `name` (see `Mailbox.open` for every argument).

        Returns:
            An awaitable of the `AsyncMailbox` that is also an async context
            manager: `async with AsyncMailbox.open(...) as mb:` is the usual form.
        """
        config = MailboxConfig(
            poll_wait=poll_wait,
            dedupe=dedupe,
            on_error=on_error,
            max_attempts=max_attempts,
            retry_delay=retry_delay,
            max_deliveries=max_deliveries,
            on_late_reply=on_late_reply,
            presence_interval=presence_interval,
            presence_ttl=presence_ttl,
        )

        async def make() -> AsyncMailbox:
            flow = open_mailbox(name, task=task, worker_id=worker_id, max_deliveries=max_deliveries)
            info = await _run(client, flow)
            return cls(client, info, config)

        return _Opening(make)

    # -- driving ----------------------------------------------------------------------------

    def _message(self, **fields: Any) -> AsyncMessage[Any]:
        return AsyncMessage(self, **fields)

    async def _perform(self, op: Op) -> Any:
        if isinstance(op, AwaitReply):
            with anyio.move_on_after(op.timeout):
                await cast(anyio.Event, op.pending.event).wait()
            return None
        if isinstance(op, CallHandler):
            with handler_span(op.message):
                result = op.handler(op.message)
                if inspect.isawaitable(result):
                    result = await result
                return result
        if isinstance(op, Sleep):
            await anyio.sleep(op.seconds)
            return None
        if isinstance(op, IdleWait):
            with anyio.move_on_after(op.timeout):
                await self._requests.wait()
            if self._requests.is_set():
                self._requests = anyio.Event()
            return None
        if isinstance(op, StartReplies):
            self._start_replies()
            return None
        value = op.call(self.client)
        if inspect.isawaitable(value):
            value = await value
        return value

    async def _drive(
        self, flow: Flow[R], perform: Callable[[Op], Awaitable[Any]] | None = None
    ) -> R:
        run = perform or self._perform
        value: Any = None
        exc: BaseException | None = None
        try:
            while True:
                done, op = advance(flow, value, exc)
                if done:
                    result: R = op
                    return result
                value, exc = None, None
                try:
                    value = await run(op)
                except Exception as err:
                    exc = err
        finally:
            flow.close()

    # -- background tasks -------------------------------------------------------------------

    def _running(self) -> TaskGroup:
        if self._closed:
            raise MailboxError(f"the mailbox {self.name!r} is closed")
        if self._tg is None:
            raise MailboxError(
                "enter the mailbox first: `async with AsyncMailbox.open(client, name) as mb:` "
                "(its heartbeats and reply stream run as tasks while it is entered)"
            )
        return self._tg

    async def _heartbeat_loop(self) -> None:
        core = self._core
        while not core.closing:
            with anyio.move_on_after(core.next_tick_in(cap=1.0)):
                await self._wake.wait()
            if self._wake.is_set():
                self._wake = anyio.Event()
            if core.closing:
                break
            try:
                await self._drive(core.tick())
            except Exception:  # pragma: no cover - tick() logs what it expects
                log.exception("heartbeat tick failed")

    def _start_replies(self) -> None:
        tg = self._running()
        if not self._replies_started:
            self._replies_started = True
            tg.start_soon(self._reply_loop, name=f"cuemsg-replies-{self.name}")

    async def _reply_loop(self) -> None:
        try:
            await self._drive(self._core.reply_loop())
        except Exception:
            if not self._core.closing:
                log.exception("the reply loop of %s stopped", self.name)

    # -- sending ----------------------------------------------------------------------------

    async def send(
        self,
        to_cue: str,
        msg: Any,
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Sent:
        """See `Mailbox.send`."""
        return await self._drive(
            self._core.send(
                to_cue, msg, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
        )

    async def send_many(
        self,
        to_cue: str,
        msgs: Sequence[Any],
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> list[Sent]:
        """See `Mailbox.send_many`."""
        return await self._drive(
            self._core.send_many(
                to_cue, msgs, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
        )

    # -- receiving --------------------------------------------------------------------------

    @overload
    def receive(
        self,
        *,
        wait: float | None = None,
        limit: int | None = None,
        type: None = None,
        batch: int = 1,
    ) -> AsyncIterator[AsyncMessage[Any]]: ...
    @overload
    def receive(
        self, *, wait: float | None = None, limit: int | None = None, type: type[T], batch: int = 1
    ) -> AsyncIterator[AsyncMessage[T]]: ...
    async def receive(
        self,
        *,
        wait: float | None = None,
        limit: int | None = None,
        type: Any = None,
        batch: int = 1,
    ) -> AsyncIterator[AsyncMessage[Any]]:
        """See `Mailbox.receive` (`async for msg in mb.receive(): ...`)."""
        self._running()
        flow = self._core.receive(wait=wait, limit=limit, type=type, batch=batch)
        value: Any = None
        exc: BaseException | None = None
        try:
            while True:
                done, op = advance(flow, value, exc)
                if done:
                    return
                value, exc = None, None
                if isinstance(op, Deliver):
                    yield op.message
                    continue
                try:
                    value = await self._perform(op)
                except Exception as err:
                    exc = err
        finally:
            flow.close()
            await self._flush_acks()

    async def _flush_acks(self) -> None:
        """Record the acks still waiting (a receive loop closed early, or aclose())."""
        if not self._core.acks:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._drive(self._core.flush_acks(final=True))
            except Exception:
                log.exception("could not record the waiting acks of %s", self.name)

    async def serve(
        self,
        handler: Callable[[AsyncMessage[Any]], Any],
        *,
        concurrency: int = 1,
        type: Any = None,
        idle_timeout: float | None = None,
    ) -> None:
        """See `Mailbox.serve`. The handler may be async (awaited) or a quick sync function."""
        self._running()
        slots = _Slots(concurrency)
        async with anyio.create_task_group() as tg:

            async def run(flow: Flow[None]) -> None:
                try:
                    await self._drive(flow)
                finally:
                    slots.give()

            async def perform(op: Op) -> Any:
                if isinstance(op, WaitSlots):
                    return await slots.wait_free()
                if isinstance(op, Spawn):
                    slots.busy += 1
                    tg.start_soon(run, op.flow)
                    return None
                if isinstance(op, Drain):
                    await slots.drain()
                    return None
                return await self._perform(op)

            await self._drive(
                self._core.serve(
                    handler, concurrency=concurrency, type=type, idle_timeout=idle_timeout
                ),
                perform,
            )

    # -- request/reply ----------------------------------------------------------------------

    @overload
    async def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: None = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> Any: ...
    @overload
    async def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: type[T],
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> T: ...
    async def request(
        self,
        to_cue: str,
        msg: Any,
        *,
        timeout: float = DEFAULT_REQUEST_TIMEOUT,
        type: Any = None,
        task: str | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        require_responder: bool = False,
    ) -> Any:
        """See `Mailbox.request`; many may wait at once (one reply stream serves them all)."""
        self._running()
        return await self._drive(
            self._core.request(
                to_cue,
                msg,
                timeout=timeout,
                type=type,
                task=task,
                thread=thread,
                headers=headers,
                require_responder=require_responder,
            )
        )

    # -- settling ---------------------------------------------------------------------------

    async def ack(self, msg: Delivery[Any], result: str | None = None) -> None:
        """See `Message.ack`."""
        await self._drive(self._core.ack(msg, result))

    async def reject(self, msg: Delivery[Any], reason: str) -> None:
        """See `Message.reject`."""
        await self._drive(self._core.reject(msg, reason))

    async def retry_later(
        self, msg: Delivery[Any], delay: float = 1.0, reason: str = ""
    ) -> str | None:
        """See `Message.retry_later`."""
        return await self._drive(self._core.retry_later(msg, delay, reason))

    async def reply(self, msg: Delivery[Any], body: Any) -> str:
        """See `Message.reply`."""
        return await self._drive(self._core.reply(msg, body))

    async def reply_error(self, msg: Delivery[Any], type: str, message: str) -> str:
        """See `Message.reply_error`."""
        return await self._drive(self._core.reply_error(msg, type, message))

    async def heartbeat(self, msg: Delivery[Any]) -> None:
        """See `Message.heartbeat`."""
        await self._drive(self._core.heartbeat(msg))

    async def redrive(self, execution_id: str) -> Redriven:
        """See `Mailbox.redrive`."""
        return await self._drive(redrive_flow(execution_id))

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """See `Mailbox.stop`."""
        self._core.stopping = True

    async def aclose(self) -> None:
        """Stop, end the background tasks, settle replies that came late. Idempotent.

        Requests still waiting fail with `MailboxError`. The client is not closed.
        """
        if self._closed:
            return
        self._closed = True
        core = self._core
        core.stopping = True
        core.closing = True
        core.router.close()
        self._wake.set()
        self._requests.set()
        await self._flush_acks()
        if self._replies_started:
            try:
                await self._drive(core.drain_replies())
            except Exception as exc:
                log.debug("could not settle late replies at close: %s", exc)
        if self._tg is not None:
            self._tg.cancel_scope.cancel()

    async def __aenter__(self) -> AsyncMailbox:
        if self._tg is not None:
            raise MailboxError("the mailbox is already entered")
        if self._closed:
            raise MailboxError(f"the mailbox {self.name!r} is closed")
        tg = anyio.create_task_group()
        await tg.__aenter__()
        self._tg = tg
        tg.start_soon(self._heartbeat_loop, name=f"cuemsg-heartbeats-{self.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with anyio.CancelScope(shield=True):
                await self.aclose()
        finally:
            tg, self._tg = self._tg, None
            if tg is not None:
                tg.cancel_scope.cancel()
                await tg.__aexit__(exc_type, exc, tb)


async def _run(client: AsyncCueClient, flow: Flow[R]) -> R:
    """Run a flow that only calls the client (no mailbox yet)."""
    value: Any = None
    exc: BaseException | None = None
    try:
        while True:
            done, op = advance(flow, value, exc)
            if done:
                result: R = op
                return result
            value, exc = None, None
            try:
                value = op.call(client)
                if inspect.isawaitable(value):
                    value = await value
            except Exception as err:
                exc = err
    finally:
        flow.close()
