"""`AsyncMailbox`: the asynchronous mailbox, a thin driver of `_core` over `AsyncCueClient`.

Runs on anyio (asyncio or trio). Its background work (lease renewals and
worker presence, the reply stream of `request()`) runs as tasks of a task
group that lives while the mailbox is entered, so use it as an async
context manager.

This module is the shell: construction, `open`/`lookup`/`aclose`, the driver
and the loops (`receive`, `serve`, heartbeats, replies); the one-line public
methods come from the twin mixins `sync.py` names (`_sending`, `_settling`,
`_admin`, `_conversations`, `_durable`).

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
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast, overload

import anyio
from anyio.abc import TaskGroup

from cuemsg._exceptions import MailboxError
from cuemsg.cueapi import AsyncCueClient
from cuemsg.mailbox._admin import AsyncAdminMethods
from cuemsg.mailbox._aopen import Opening, adrive, run_flow
from cuemsg.mailbox._config import (
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELIVERIES,
    DEFAULT_POLL_WAIT,
    DEFAULT_PRESENCE_INTERVAL,
    DEFAULT_PRESENCE_TTL,
    DEFAULT_RETRY_DELAY,
    PREFETCH,
    MailboxConfig,
    MailboxInfo,
    OnError,
)
from cuemsg.mailbox._conversations import AsyncConversationMethods
from cuemsg.mailbox._core import MailboxBase, MailboxCore
from cuemsg.mailbox._durable import AsyncDurableMethods
from cuemsg.mailbox._message import AsyncMessage
from cuemsg.mailbox._opening import open_mailbox
from cuemsg.mailbox._ops import (
    AwaitReply,
    CallHandler,
    Deliver,
    Drain,
    Flow,
    HoldSlot,
    IdleWait,
    Op,
    Pause,
    ReleaseSlot,
    Spawn,
    StartReplies,
    WaitSlots,
)
from cuemsg.mailbox._receive import pick_prefetch
from cuemsg.mailbox._sending import AsyncSendMethods
from cuemsg.mailbox._settling import AsyncSettleMethods
from cuemsg.mailbox._slots import TaskSlots
from cuemsg.mailbox._thread_state import BusyPolicy
from cuemsg.mailbox.dedupe import DedupeStore
from cuemsg.mailbox.names import MailboxAddress, lookup
from cuemsg.mailbox.tracing import handler_span
from cuemsg.signing import SigningKey

__all__ = ["AsyncMailbox", "AsyncMessage"]

log = logging.getLogger("cuemsg.mailbox")

T = TypeVar("T")
R = TypeVar("R")


class AsyncMailbox(
    MailboxBase,
    AsyncSendMethods,
    AsyncSettleMethods,
    AsyncAdminMethods,
    AsyncConversationMethods,
    AsyncDurableMethods,
):
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
        # When the heartbeat task wakes by itself (`core.monotonic()`; -inf while awake).
        self._tick_at = float("-inf")
        self._core.leases.on_hold = self._nudge
        self._core.acks.on_due = self._nudge
        self._core.router.on_expect = lambda: self._requests.set()
        self._tg: TaskGroup | None = None
        self._replies_started = False
        self._replies_done = anyio.Event()  # the reply loop ended (its last acks recorded)
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
        signing_key: SigningKey | str | Path | None = None,
        require_signed: bool = False,
    ) -> Opening:
        """Open the mailbox `name`, creating its cue if it does not exist yet.

        Safe when several processes open the same name at once: they all
        end up on one cue.

        Args:
            client: the `AsyncCueClient` to talk through.
            name: the mailbox (and its cue's) name, unique per tenant.
            task: its routing task; default `name` (or the existing cue's task).
            worker_id: the name it claims and settles with; default
                `<task>@<host>:<pid>` (one per process, so leases tell them apart).
            poll_wait: longest long-poll of its loops, in seconds; `stop()`
                takes effect when the current one returns.
            dedupe: where handled message ids are kept (default: in memory,
                bounded); a `SQLiteDedupe` keeps them across restarts.
            on_error: what a handler exception does to a message (not a
                request: that always gets an error reply): `"reject"` (dead
                letter) or `"retry"` (retry-later with backoff, bounded).
            max_attempts: retry-later re-fires of one message before it is rejected.
            retry_delay: first backoff of `on_error="retry"` (doubles each time).
            max_deliveries: claims of one execution before the server fails it
                (set on the cue when it is created).
            on_late_reply: called with each reply that came after its request gave up.
            presence_interval: seconds between "alive" heartbeats while receiving.
            presence_ttl: a responder is alive if seen within this (`require_responder`).
            signing_key: this mailbox's Ed25519 key (a `cuemsg.signing.SigningKey`, its
                text, or a `Path` to a file holding it; `SigningKey.from_env()` reads an
                environment variable): every envelope it sends is signed, and its
                public key is published on its cue.
            require_signed: handle only messages signed by the key their claimed
                sender publishes; others are rejected (the outcome says why) and
                never reach a handler or `receive()`.

        Returns:
            The open mailbox; `with AsyncMailbox.open(...) as mb:` closes it on exit.

        Raises:
            MailboxError: a cue of that name exists and is not a mailbox.

        Async: the answer is an awaitable that is also an async context manager:
        `async with AsyncMailbox.open(...) as mb:` or `mb = await AsyncMailbox.open(...)`.
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
            signing_key=None if signing_key is None else SigningKey.coerce(signing_key),
            require_signed=require_signed,
        )

        async def make() -> AsyncMailbox:
            flow = open_mailbox(
                name,
                task=task,
                worker_id=worker_id,
                max_deliveries=max_deliveries,
                public_key=None if config.signing_key is None else config.signing_key.public_key,
            )
            info = await run_flow(client, flow)
            return cls(client, info, config)

        return Opening(make)

    @classmethod
    async def lookup(cls, client: AsyncCueClient, name: str) -> MailboxAddress:
        """Find the mailbox `name` (or at the address `name`); never creates one.

        Args:
            client: the `AsyncCueClient` to talk through.
            name: a mailbox name, or an address (cue id).

        Returns:
            `MailboxAddress(name, address, task)`.

        Raises:
            MailboxNotFound: no mailbox has that name; `.near` lists close names
                (it is a `NotFound`).
            NotFound: no cue has that address.
            MailboxError: the cue of that name is not a mailbox.
        """
        return await run_flow(client, lookup(name))

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
        if isinstance(op, Pause):
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
        return await adrive(flow, perform or self._perform)

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

    def _nudge(self, due: float) -> None:
        """A lease was taken or an ack queued, due at `due`: wake the heartbeat task
        if that is before it wakes by itself (a wake-up each message costs more)."""
        if due < self._tick_at:
            self._wake.set()

    async def _heartbeat_loop(self) -> None:
        core = self._core
        while not core.closing:
            wait = core.next_tick_in(cap=1.0)
            self._tick_at = core.monotonic() + wait
            with anyio.move_on_after(wait):
                await self._wake.wait()
            self._tick_at = float("-inf")  # awake: what comes now is seen before it sleeps
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
        finally:
            self._replies_done.set()

    # -- receiving --------------------------------------------------------------------------

    @overload
    def receive(
        self,
        *,
        wait: float | None = None,
        limit: int | None = None,
        type: None = None,
        prefetch: int | None = None,
        batch: int | None = None,
    ) -> AsyncGenerator[AsyncMessage[Any], None]: ...
    @overload
    def receive(
        self,
        *,
        wait: float | None = None,
        limit: int | None = None,
        type: type[T],
        prefetch: int | None = None,
        batch: int | None = None,
    ) -> AsyncGenerator[AsyncMessage[T], None]: ...
    async def receive(
        self,
        *,
        wait: float | None = None,
        limit: int | None = None,
        type: Any = None,
        prefetch: int | None = None,
        batch: int | None = None,
    ) -> AsyncGenerator[AsyncMessage[Any], None]:
        """Iterate over incoming messages.

        Args:
            wait: stop after this many seconds with no message (None: run
                until `stop()`).
            limit: stop after this many messages.
            type: decode bodies to this type (pydantic model, Struct, ...).
            prefetch: messages one claim takes at most when a backlog waits
                (default 20 where the server lists `claim.many` and
                `executions.release`, else 1); with none waiting a claim takes
                the first to come, at once. They are handed out one at a time,
                their leases renewed meanwhile. The acks of the messages the
                loop moves on from ride on the next claim (`claim.settle`), or
                are recorded together before it (or when the loop ends, or a
                second after they were decided); with `prefetch=1` and no
                `claim.settle`, each at once. `stop()` ends the loop before the
                next message and gives back those not handed out (with
                `executions.release` they are pending again at once; without
                it, when their leases run out).
            batch: the former name of `prefetch` (give one or the other).

        Usage: `async for msg in mb.receive(): ...`.

        Yields:
            Each `AsyncMessage`; one left unsettled is acked when the loop moves
            on. Breaking out of the loop with one unsettled leaves it to be
            delivered again when its lease runs out: ack it first. The messages
            claimed ahead and not handed out are given back, and the acks
            already decided recorded.
        """
        self._running()
        flow = self._core.receive(
            wait=wait, limit=limit, type=type, prefetch=pick_prefetch(prefetch, batch)
        )
        value: Any = None
        exc: BaseException | None = None
        try:
            while True:
                try:  # `advance`, written in (as `drive`)
                    op = flow.throw(exc) if exc is not None else flow.send(value)
                except StopIteration:
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
            await self._release_prefetched()
            await self._flush_acks()

    async def _release_prefetched(self) -> None:
        """Give back the messages a receive loop claimed ahead and did not hand out."""
        if not self._core.prefetched:
            return
        with anyio.CancelScope(shield=True):
            try:
                await self._drive(self._core.release_prefetched())
            except Exception:
                log.exception("could not give back the prefetched messages of %s", self.name)

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
        on_busy: BusyPolicy = "queue",
        prefetch: int = PREFETCH,
    ) -> None:
        """Handle messages until `stop()` (or `idle_timeout` s without one).

        The handler's return value answers a request; a message is acked
        when the handler returns (the ack rides on the next claim with
        `claim.settle`; acks of handlers that finish close together are recorded
        with one request, at most 50 ms later; replies at once).
        `RetryLater` asks for a later retry; any
        other exception sends a request an error reply, and rejects (or,
        with `on_error="retry"`, retries) a message. The loop survives bad
        messages and handler errors.

        Args:
            handler: called with each `AsyncMessage`.
            concurrency: handlers running at once.
            type: decode bodies to this type.
            idle_timeout: return after this many seconds with nothing to do.
            on_busy: what a message of a thread whose handler still runs meets:
                `"queue"` (it waits its turn: one handler per thread at a time,
                in arrival order; other threads run in parallel), `"reject"`
                (a request is answered with a `busy` error, a message rejected
                as busy), `"interrupt"` (the running message's `cancelled` event
                is set; the new one runs once that handler returns). Its outcome
                records what the policy did.
            prefetch: messages one claim takes at most when a backlog waits,
                never more than there are free handler slots (each goes to a
                handler at once).

        Async: the handler may be a coroutine function (awaited) or a quick sync
        function (called in the event loop).
        """
        self._running()
        slots = TaskSlots(concurrency)
        async with anyio.create_task_group() as tg:

            async def run(flow: Flow[None]) -> None:
                try:
                    await self._drive(flow, perform)  # slot ops too
                finally:
                    slots.give()

            async def perform(op: Op) -> Any:
                if isinstance(op, WaitSlots):
                    return await slots.wait_free()
                if isinstance(op, Spawn):
                    slots.busy += 1
                    tg.start_soon(run, op.flow)
                    return None
                if isinstance(op, HoldSlot):
                    slots.busy += 1
                    return None
                if isinstance(op, ReleaseSlot):
                    slots.give()
                    return None
                if isinstance(op, Drain):
                    await slots.drain()
                    return None
                return await self._perform(op)

            await self._drive(
                self._core.serve(
                    handler,
                    concurrency=concurrency,
                    type=type,
                    idle_timeout=idle_timeout,
                    on_busy=on_busy,
                    prefetch=prefetch,
                ),
                perform,
            )

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking messages, for good: `receive()` and `serve()` end after their
        current poll, once the handlers in hand have finished. Safe to call twice,
        and from a handler.
        """
        self._core.stopping = True

    async def aclose(self) -> None:
        """Stop, end the background loops, settle replies that came late. Idempotent.

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
        await self._release_prefetched()
        await self._flush_acks()
        if self._replies_started:
            # As `Mailbox.close` joins its reply thread: the loop's last flush of reply
            # acks must not be cancelled with the task group.
            with anyio.move_on_after(core.config.poll_wait + self.client.timeout):
                await self._replies_done.wait()
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
