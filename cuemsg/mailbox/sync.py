"""`Mailbox`: the synchronous mailbox, a thin driver of `_core` over `CueClient`.

Heartbeats (lease renewals and worker presence) run in one background
thread per mailbox, the reply stream of `request()` in another, started on
first use. `serve(concurrency=N)` runs handlers in a pool of N threads.

This module is the shell: construction, `open`/`lookup`/`close`, the driver
and the loops (`receive`, `serve`, heartbeats, replies). Most public methods
are one-line drivers of a core flow, inherited from twin mixins beside it:
`_sending` (send, request), `_settling` (ack, reply...), `_admin` (waiting,
delete), `_conversations` (threads, topics), `_durable` (tickets, gather).

Example:
    ```python
    from cuemsg import CueClient, Mailbox

    with CueClient() as client, Mailbox.open(client, "planner") as inbox:
        inbox.send(writer_address, {"goal": "draft the intro"})
        for msg in inbox.receive(wait=10):
            print(msg.sender, msg.body)     # acked when the loop moves on
        answer = inbox.request(writer_address, {"q": "status?"}, timeout=30)
    ```
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar, cast, overload

from cuemsg._exceptions import MailboxError
from cuemsg.cueapi import CueClient
from cuemsg.mailbox._admin import AdminMethods
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
from cuemsg.mailbox._conversations import ConversationMethods
from cuemsg.mailbox._core import MailboxBase, MailboxCore
from cuemsg.mailbox._durable import DurableMethods
from cuemsg.mailbox._message import Message
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
    drive,
)
from cuemsg.mailbox._receive import pick_prefetch
from cuemsg.mailbox._sending import SendMethods
from cuemsg.mailbox._settling import SettleMethods
from cuemsg.mailbox._slots import ThreadSlots
from cuemsg.mailbox._thread_state import BusyPolicy
from cuemsg.mailbox.dedupe import DedupeStore
from cuemsg.mailbox.names import MailboxAddress, lookup
from cuemsg.mailbox.tracing import handler_span
from cuemsg.signing import SigningKey

__all__ = ["Mailbox", "Message"]

log = logging.getLogger("cuemsg.mailbox")

T = TypeVar("T")
R = TypeVar("R")


class Mailbox(
    MailboxBase, SendMethods, SettleMethods, AdminMethods, ConversationMethods, DurableMethods
):
    """A synchronous mailbox: a worker cue that agents send messages to.

    Make one with `Mailbox.open(client, name)`. It is a context manager
    (`close()` on exit); the client stays the caller's to close.
    """

    def __init__(self, client: CueClient, info: MailboxInfo, config: MailboxConfig) -> None:
        self.client = client
        self._wake = threading.Event()  # heartbeat thread: something is due sooner, or closing
        # When the heartbeat thread wakes by itself (`core.monotonic()`): -inf while it
        # is awake (what comes then is seen before it sleeps), +inf while it works out
        # how long to sleep (what comes then must wake it: that reckoning may miss it).
        self._tick_at = float("-inf")
        self._requests = threading.Event()  # reply thread: a request started waiting
        self._core = MailboxCore(
            info, config, event_factory=threading.Event, make_message=self._message
        )
        self._core.leases.on_hold = self._nudge
        self._core.acks.on_due = self._nudge
        self._core.router.on_expect = self._requests.set
        self._lock = threading.Lock()
        self._heartbeats: threading.Thread | None = None
        self._replies: threading.Thread | None = None
        self._closed = False
        self._closed_event = threading.Event()

    @classmethod
    def open(
        cls,
        client: CueClient,
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
        on_late_reply: Callable[[Message[Any]], Any] | None = None,
        presence_interval: float = DEFAULT_PRESENCE_INTERVAL,
        presence_ttl: float = DEFAULT_PRESENCE_TTL,
        signing_key: SigningKey | str | Path | None = None,
        require_signed: bool = False,
    ) -> Mailbox:
        """Open the mailbox `name`, creating its cue if it does not exist yet.

        Safe when several processes open the same name at once: they all
        end up on one cue.

        Args:
            client: the `CueClient` to talk through.
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
            The open mailbox; `with Mailbox.open(...) as mb:` closes it on exit.

        Raises:
            MailboxError: a cue of that name exists and is not a mailbox.
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
        flow = open_mailbox(
            name,
            task=task,
            worker_id=worker_id,
            max_deliveries=max_deliveries,
            public_key=None if config.signing_key is None else config.signing_key.public_key,
        )
        info = _run(client, flow)
        return cls(client, info, config)

    @classmethod
    def lookup(cls, client: CueClient, name: str) -> MailboxAddress:
        """Find the mailbox `name` (or at the address `name`); never creates one.

        Args:
            client: the `CueClient` to talk through.
            name: a mailbox name, or an address (cue id).

        Returns:
            `MailboxAddress(name, address, task)`.

        Raises:
            MailboxNotFound: no mailbox has that name; `.near` lists close names
                (it is a `NotFound`).
            NotFound: no cue has that address.
            MailboxError: the cue of that name is not a mailbox.
        """
        return _run(client, lookup(name))

    # -- driving ----------------------------------------------------------------------------

    def _message(self, **fields: Any) -> Message[Any]:
        return Message(self, **fields)

    def _perform(self, op: Op) -> Any:
        if isinstance(op, AwaitReply):
            cast(threading.Event, op.pending.event).wait(op.timeout)
            return None
        if isinstance(op, CallHandler):
            with handler_span(op.message):
                return op.handler(op.message)
        if isinstance(op, Pause):
            self._wake_or_close(op.seconds)
            return None
        if isinstance(op, IdleWait):
            self._requests.wait(op.timeout)
            self._requests.clear()
            return None
        if isinstance(op, StartReplies):
            self._start_replies()
            return None
        return op.call(self.client)

    def _wake_or_close(self, seconds: float) -> None:
        self._closed_event.wait(seconds)  # sleep, but not past close()

    def _drive(self, flow: Flow[R], perform: Callable[[Op], Any] | None = None) -> R:
        return drive(flow, perform or self._perform)

    # -- background threads -----------------------------------------------------------------

    def _ensure_heartbeats(self) -> None:
        self._check_open()
        with self._lock:
            if self._heartbeats is None:
                self._heartbeats = threading.Thread(
                    target=self._heartbeat_loop, name=f"cuemsg-heartbeats-{self.name}", daemon=True
                )
                self._heartbeats.start()

    def _nudge(self, due: float) -> None:
        """A lease was taken or an ack queued, due at `due`: wake the heartbeat thread
        if that is before it wakes by itself (a wake-up each message costs more)."""
        if due < self._tick_at:
            self._wake.set()

    def _heartbeat_loop(self) -> None:
        core = self._core
        while not core.closing:
            self._tick_at = float("inf")
            wait = core.next_tick_in(cap=1.0)
            self._tick_at = core.monotonic() + wait
            self._wake.wait(wait)
            self._tick_at = float("-inf")
            self._wake.clear()
            if core.closing:
                break
            try:
                self._drive(core.tick())
            except Exception:  # pragma: no cover - tick() logs what it expects
                log.exception("heartbeat tick failed")

    def _start_replies(self) -> None:
        self._check_open()
        with self._lock:
            if self._replies is None:
                self._replies = threading.Thread(
                    target=self._reply_loop, name=f"cuemsg-replies-{self.name}", daemon=True
                )
                self._replies.start()

    def _reply_loop(self) -> None:
        try:
            self._drive(self._core.reply_loop())
        except Exception:
            if not self._core.closing:
                log.exception("the reply loop of %s stopped", self.name)

    def _check_open(self) -> None:
        if self._closed:
            raise MailboxError(f"the mailbox {self.name!r} is closed")

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
    ) -> Generator[Message[Any], None, None]: ...
    @overload
    def receive(
        self,
        *,
        wait: float | None = None,
        limit: int | None = None,
        type: type[T],
        prefetch: int | None = None,
        batch: int | None = None,
    ) -> Generator[Message[T], None, None]: ...
    def receive(
        self,
        *,
        wait: float | None = None,
        limit: int | None = None,
        type: Any = None,
        prefetch: int | None = None,
        batch: int | None = None,
    ) -> Generator[Message[Any], None, None]:
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

        Usage: `for msg in mb.receive(): ...`.

        Yields:
            Each `Message`; one left unsettled is acked when the loop moves
            on. Breaking out of the loop with one unsettled leaves it to be
            delivered again when its lease runs out: ack it first. The messages
            claimed ahead and not handed out are given back, and the acks
            already decided recorded.
        """
        self._ensure_heartbeats()
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
                    value = self._perform(op)
                except Exception as err:
                    exc = err
        finally:
            flow.close()
            self._release_prefetched()
            self._flush_acks()

    def _release_prefetched(self) -> None:
        """Give back the messages a receive loop claimed ahead and did not hand out."""
        if not self._core.prefetched:
            return
        try:
            self._drive(self._core.release_prefetched())
        except Exception:
            log.exception("could not give back the prefetched messages of %s", self.name)

    def _flush_acks(self) -> None:
        """Record the acks still waiting (a receive loop closed early, or close())."""
        if not self._core.acks:
            return
        try:
            self._drive(self._core.flush_acks(final=True))
        except Exception:
            log.exception("could not record the waiting acks of %s", self.name)

    def serve(
        self,
        handler: Callable[[Message[Any]], Any],
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
            handler: called with each `Message`.
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

        Sync: with concurrency > 1 the handler runs in a pool thread.
        """
        self._ensure_heartbeats()
        slots = ThreadSlots(concurrency)
        pool = ThreadPoolExecutor(concurrency, f"cuemsg-{self.name}") if concurrency > 1 else None

        def perform(op: Op) -> Any:
            if isinstance(op, WaitSlots):
                return slots.wait_free()
            if isinstance(op, Spawn):
                if pool is None:
                    self._drive(op.flow, perform)
                else:
                    slots.take()
                    future: Future[None] = pool.submit(self._drive, op.flow, perform)
                    future.add_done_callback(slots.give)
                return None
            if isinstance(op, HoldSlot):
                slots.take()
                return None
            if isinstance(op, ReleaseSlot):
                slots.give()
                return None
            if isinstance(op, Drain):
                slots.drain()
                return None
            return self._perform(op)

        try:
            self._drive(
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
        finally:
            if pool is not None:
                pool.shutdown(wait=True)

    # -- lifecycle --------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop taking messages, for good: `receive()` and `serve()` end after their
        current poll, once the handlers in hand have finished. Safe to call twice,
        and from a handler.

        Sync: also safe from any thread.
        """
        self._core.stopping = True

    def close(self) -> None:
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
        self._closed_event.set()
        self._wake.set()
        self._requests.set()
        if self._heartbeats is not None:
            self._heartbeats.join(timeout=5.0)
        self._release_prefetched()
        self._flush_acks()
        if self._replies is not None:
            self._replies.join(timeout=core.config.poll_wait + self.client.timeout)
            try:
                self._drive(core.drain_replies())
            except Exception as exc:
                log.debug("could not settle late replies at close: %s", exc)

    def __enter__(self) -> Mailbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _run(client: CueClient, flow: Flow[R]) -> R:
    """Run a flow that only calls the client (no mailbox yet)."""
    return drive(flow, lambda op: op.call(client))
