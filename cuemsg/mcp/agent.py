"""What the MCP tools do, without MCP: one agent's mailbox, over the public cuemsg API.

`Agent` holds the agent's `AsyncMailbox`, the requests it was handed and
has not answered yet (`held.HeldRequests`), and a `resolve.Directory` of
the tenant's mailboxes. Each tool is one method that answers plain JSON
values, or raises `AgentError` whose text says what went wrong and what to
do about it, written for the LLM that will read it. `server.py` only wires
these methods to MCP; tests can drive them directly.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio

from cuemsg import (
    AsyncCueClient,
    AsyncMailbox,
    AsyncMessage,
    CuemsgError,
    EnvelopeError,
    LeaseLost,
    NoReply,
    NotFound,
    PayloadTooLarge,
    RemoteError,
    RequestTimeout,
)
from cuemsg.mcp.held import HeldRequests, NotHeld
from cuemsg.mcp.history import message_history, thread_history
from cuemsg.mcp.resolve import Directory, MailboxEntry, UnknownMailbox

__all__ = ["Agent", "AgentError", "Progress"]

#: `check_inbox` waits at most this long, and hands over at most `MAX_INBOX_LIMIT` messages.
MAX_INBOX_WAIT = 30.0
MAX_INBOX_LIMIT = 50
#: `ask_agent` gives up after at most this long.
MAX_ASK_TIMEOUT = 600.0
#: How often `ask_agent` reports progress while it waits.
PROGRESS_EVERY = 1.0
#: Extra time a call may take past its own limit before it is cut (a guard, not a wait).
GRACE = 10.0
#: Waiting messages shown per mailbox by the inbox resource.
OLDEST_SHOWN = 5
#: Pending executions read to count a mailbox's waiting messages.
_COUNT_SCAN = 1000
_PAGE = 100

#: Called by `ask_agent` while it waits: (seconds waited, timeout, text).
Progress = Callable[[float, float, str], Awaitable[None]]

_TIMEOUT_REASONS = {
    "no_responder": (
        "nobody picked the request up: no agent is reading {name}'s inbox right now. "
        "Check list_mailboxes (responder_alive), or send a one-way message with "
        "send_message instead"
    ),
    "dead_responder": (
        "an agent took the request and then stopped (it crashed or was stopped) "
        "before answering; the request goes back to {name}'s inbox. Try again later"
    ),
    "slow_responder": (
        "{name} is still working on it, or answered too late. Ask again with a larger "
        "timeout_seconds, or carry on and look for the answer with message_history"
    ),
}


class AgentError(Exception):
    """A tool failed in a way the agent can act on; the text says how."""


class Agent:
    """One LLM agent's mailbox and the tools over it (enter with `Agent.open`)."""

    def __init__(self, client: AsyncCueClient, mailbox: AsyncMailbox) -> None:
        self.client = client
        self.mailbox = mailbox
        self.held = HeldRequests(mailbox)
        self.directory = Directory(client)
        self.me = MailboxEntry(name=mailbox.name, address=mailbox.address, task=mailbox.task)

    @classmethod
    @contextlib.asynccontextmanager
    async def open(cls, client: AsyncCueClient, name: str) -> AsyncIterator[Agent]:
        """Open (or create) the mailbox `name`; on exit release the held requests.

        Released requests are no longer renewed: the server delivers them
        again when their leases run out.
        """
        async with AsyncMailbox.open(client, name) as mailbox, anyio.create_task_group() as tg:
            agent = cls(client, mailbox)
            tg.start_soon(agent.held.renew_forever)
            try:
                yield agent
            finally:
                agent.held.release_all()
                tg.cancel_scope.cancel()

    # -- sending ----------------------------------------------------------------------------

    async def send_message(
        self, to: str, body: Any, *, thread: str | None = None, ttl_seconds: float | None = None
    ) -> dict[str, Any]:
        """Send one one-way message; answers its id and execution id."""
        target = await self._resolve(to)
        try:
            sent = await self.mailbox.send(target.address, body, thread=thread, ttl=ttl_seconds)
        except (EnvelopeError, PayloadTooLarge) as exc:
            raise AgentError(_bad_body(exc)) from exc
        except NotFound as exc:
            raise AgentError(f"the mailbox {target.name!r} no longer exists: {exc}") from exc
        return {
            "message_id": sent.id,
            "execution_id": sent.execution_id,
            "to": {"name": target.name, "address": target.address},
        }

    async def ask_agent(
        self, to: str, body: Any, *, timeout_seconds: float = 60.0, progress: Progress | None = None
    ) -> Any:
        """Send a request and wait for its reply body (reporting progress while waiting)."""
        if not 0 < timeout_seconds <= MAX_ASK_TIMEOUT:
            raise AgentError(
                f"timeout_seconds must be between 1 and {MAX_ASK_TIMEOUT:g}, not {timeout_seconds}"
            )
        target = await self._resolve(to)
        answer: list[Any] = []
        failure: list[BaseException] = []
        done = anyio.Event()

        async def ask() -> None:
            try:
                answer.append(
                    await self.mailbox.request(target.address, body, timeout=timeout_seconds)
                )
            except Exception as exc:
                failure.append(exc)
            finally:
                done.set()

        started = time.monotonic()
        with anyio.move_on_after(timeout_seconds + GRACE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(ask)
                while not done.is_set():
                    with anyio.move_on_after(PROGRESS_EVERY):
                        await done.wait()
                    if progress is not None and not done.is_set():
                        waited = time.monotonic() - started
                        await progress(
                            min(waited, timeout_seconds),
                            timeout_seconds,
                            f"waiting for {target.name} to answer",
                        )
        if answer:
            return answer[0]
        if failure:
            raise AgentError(self._ask_failed(target, timeout_seconds, failure[0])) from failure[0]
        raise AgentError(
            f"no reply from {target.name!r} within {timeout_seconds:g}s (the wait was cut)"
        )

    def _ask_failed(self, target: MailboxEntry, timeout: float, exc: BaseException) -> str:
        name = target.name
        if isinstance(exc, RequestTimeout):
            reason = exc.reason or "unknown"
            why = _TIMEOUT_REASONS.get(reason, "the reason is unknown").format(name=name)
            return f"no reply from {name!r} within {timeout:g}s ({reason}): {why}."
        if isinstance(exc, NoReply):
            return (
                f"{name!r} settled the request without answering it ({exc}); "
                "asking again will not help unless you change the request."
            )
        if isinstance(exc, RemoteError):
            if exc.type == "Declined":
                return f"{name!r} declined the request: {exc.message}"
            return f"{name!r} could not answer: {exc.type}: {exc.message}"
        if isinstance(exc, (EnvelopeError, PayloadTooLarge)):
            return _bad_body(exc)
        if isinstance(exc, NotFound):
            return f"the mailbox {name!r} no longer exists: {exc}"
        return f"the request to {name!r} failed: {type(exc).__name__}: {exc}"

    # -- receiving --------------------------------------------------------------------------

    async def check_inbox(
        self, *, wait_seconds: float = 0.0, limit: int = 10, session: str | None = None
    ) -> dict[str, Any]:
        """Hand over up to `limit` waiting messages, waiting up to `wait_seconds` for the first.

        One-way messages are acked as handed over; requests are held for the
        MCP `session` until it answers them (`reply`/`decline`), their
        deadline passes, or the session ends.
        """
        if not 0 <= wait_seconds <= MAX_INBOX_WAIT:
            raise AgentError(
                f"wait_seconds must be between 0 and {MAX_INBOX_WAIT:g}, not {wait_seconds}"
            )
        if not 1 <= limit <= MAX_INBOX_LIMIT:
            raise AgentError(f"limit must be between 1 and {MAX_INBOX_LIMIT}, not {limit}")
        messages: list[dict[str, Any]] = []
        deadline = time.monotonic() + wait_seconds
        with anyio.move_on_after(wait_seconds + GRACE):
            while len(messages) < limit:
                # Wait only for the first message; after it, take what is already waiting.
                wait = max(0.0, deadline - time.monotonic()) if not messages else 0.0
                msg = await self._claim_one(wait)
                if msg is None:
                    break
                # Shielded: a message claimed (and maybe acked) is always reported.
                with anyio.CancelScope(shield=True):
                    messages.append(await self._hand_over(msg, session))
        return {"messages": messages, "held_requests": self.held.count(session)}

    async def _claim_one(self, wait: float) -> AsyncMessage[Any] | None:
        # Leaving the receive loop with the message in hand keeps it unsettled (the loop
        # would ack it on the next turn); its lease is then ours to renew or settle.
        received = self.mailbox.receive(wait=wait, limit=1)
        try:
            async for msg in received:
                return msg
            return None
        finally:
            await received.aclose()

    async def _hand_over(self, msg: AsyncMessage[Any], session: str | None) -> dict[str, Any]:
        is_request = msg.is_request and msg.reply_cue_id is not None
        if is_request:
            self.held.add(msg, session)
        else:
            await self.mailbox.ack(
                msg, f"handed to the MCP agent of mailbox {self.me.name!r} by check_inbox"
            )
        return {
            "id": msg.id,
            "from": {"name": await self.directory.name_of(msg.sender), "address": msg.sender},
            "body": msg.body,
            "thread": msg.thread,
            "sent_at": msg.sent_at.isoformat() if msg.sent_at else None,
            "is_request": is_request,
            "deadline": msg.expires_at.isoformat() if msg.expires_at else None,
        }

    # -- answering --------------------------------------------------------------------------

    async def reply(
        self, message_id: str, body: Any, *, session: str | None = None
    ) -> dict[str, Any]:
        """Answer the request `message_id`, held for `session`, with `body`."""
        msg = self._held(message_id, session)
        try:
            reply_execution = await self.mailbox.reply(msg, body)
        except (EnvelopeError, PayloadTooLarge) as exc:
            raise AgentError(_bad_body(exc) + " The request is still held.") from exc
        except LeaseLost as exc:
            self.held.settled(message_id, "lost (its lease passed to another worker)")
            raise AgentError(
                f"too late: the request {message_id} was handed to another worker ({exc})"
            ) from exc
        self.held.settled(message_id, "answered with reply")
        return {"replied_to": message_id, "reply_execution_id": reply_execution}

    async def decline(
        self, message_id: str, reason: str, *, session: str | None = None
    ) -> dict[str, Any]:
        """Refuse the request `message_id`, held for `session`; its requester gets `RemoteError`."""
        if not reason.strip():
            raise AgentError("give a reason: the requester reads it in its error")
        msg = self._held(message_id, session)
        try:
            reply_execution = await self.mailbox.reply_error(msg, "Declined", reason)
        except LeaseLost as exc:
            self.held.settled(message_id, "lost (its lease passed to another worker)")
            raise AgentError(
                f"too late: the request {message_id} was handed to another worker ({exc})"
            ) from exc
        self.held.settled(message_id, "declined")
        return {"declined": message_id, "reply_execution_id": reply_execution}

    def _held(self, message_id: str, session: str | None) -> AsyncMessage[Any]:
        try:
            return self.held.get(message_id, session)
        except NotHeld as exc:
            raise AgentError(str(exc)) from exc

    def end_session(self, session: str) -> int:
        """The MCP `session` ended: let go of its held requests (they are delivered again)."""
        return self.held.release(session)

    # -- looking around ---------------------------------------------------------------------

    async def list_mailboxes(self) -> list[dict[str, Any]]:
        """The tenant's mailboxes: name, address, waiting count, responder alive."""
        cues = await self.directory.cues()
        alive = await self.directory.responders(cues)
        rows = []
        for cue in cues:
            count, _ = await self._waiting(cue.id, str(cue.payload["task"]), 0)
            rows.append(
                {
                    "name": cue.name,
                    "address": cue.id,
                    "waiting": count,
                    "responder_alive": cue.id in alive,
                    "is_you": cue.id == self.me.address,
                }
            )
        return rows

    async def message_history(
        self, *, thread: str | None = None, limit: int = 20
    ) -> list[dict[str, Any]]:
        """This mailbox's recent messages in and out (or one thread's), newest first."""
        if not 1 <= limit <= 200:
            raise AgentError(f"limit must be between 1 and 200, not {limit}")
        if thread is not None:
            if not thread:
                raise AgentError("thread is empty: give a conversation id, or leave it out")
            return await thread_history(self.mailbox, self.directory, thread, limit=limit)
        return await message_history(
            self.client, self.directory, self.me, thread=thread, limit=limit
        )

    async def inbox(self) -> dict[str, Any]:
        """The waiting count of this mailbox and its oldest waiting messages."""
        count, oldest = await self._waiting(self.me.address, self.me.task, OLDEST_SHOWN)
        return {
            "mailbox": {"name": self.me.name, "address": self.me.address},
            "waiting": count,
            "held_requests": len(self.held),
            "oldest": oldest,
        }

    async def _waiting(
        self, address: str, task: str, show: int
    ) -> tuple[int, list[dict[str, Any]]]:
        """Pending messages on `address` for its task: how many, and the oldest `show`."""
        found: list[dict[str, Any]] = []
        offset = 0
        while offset < _COUNT_SCAN:
            page = await self.client.executions.list(
                cue_id=address, status="pending", limit=_PAGE, offset=offset
            )
            for exe in page.executions:
                payload = exe.payload or {}
                if payload.get("task") == task:
                    meta = payload.get("cuemsg") or {}
                    found.append(
                        {
                            "id": meta.get("id", f"exec:{exe.id}"),
                            "from": meta.get("sender"),
                            "kind": meta.get("kind", "message"),
                            "sent_at": meta.get("sent_at"),
                        }
                    )
            offset += len(page.executions)
            if not page.executions or offset >= page.total:
                break
        return len(found), found[::-1][:show]  # listed newest first

    async def _resolve(self, to: str) -> MailboxEntry:
        try:
            return await self.directory.resolve(to)
        except UnknownMailbox as exc:
            raise AgentError(str(exc)) from exc


def _bad_body(exc: CuemsgError) -> str:
    return (
        f"the body cannot be sent: {exc}. A body is any JSON value of at most 1 MiB once "
        "encoded; send a smaller one (a summary, or a reference to where the data is)"
    )
