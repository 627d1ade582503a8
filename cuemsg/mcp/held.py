"""Requests an MCP agent holds: received, not answered yet, leases kept alive.

An LLM answers a request some tool calls after `check_inbox` handed it
over, so the request's lease must outlive the call that claimed it. This
book keeps each held request's lease renewed from a background task (a
third of the lease at a time, as a Mailbox does for a running handler),
until the agent replies or declines, the request's deadline passes, or the
book is released. Released or lost leases are simply no longer renewed:
the server hands the request out again when its lease runs out, so nothing
is lost when the agent's session ends or its process dies.

Each request is held for one MCP session (`owner`: the transport's session
id, None over stdio where the process is the session): only that session
can answer it, and `release(owner)` lets go of its requests when it ends.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio

from cuemsg import AsyncMailbox, AsyncMessage, Conflict, CuemsgError, Forbidden, NotFound

__all__ = ["HeldRequests", "NotHeld"]

log = logging.getLogger("cuemsg.mcp")

#: Renewal interval used until a heartbeat has told us the lease's length.
FIRST_RENEWAL = 0.0
#: Lower bound on the renewal interval (a very short server lease).
MIN_RENEWAL = 0.05
#: How many settled or dropped request ids are remembered to explain a late reply.
_GONE_KEPT = 1000


class NotHeld(LookupError):
    """The message id is not a request this agent holds; the text says why."""


@dataclass
class _Held:
    msg: AsyncMessage[Any]
    owner: str | None
    next_due: float
    interval: float


class HeldRequests:
    """The requests one agent holds, renewed while held (run `renew_forever` as a task)."""

    def __init__(self, mailbox: AsyncMailbox) -> None:
        self.mailbox = mailbox
        self._held: dict[str, _Held] = {}
        self._gone: OrderedDict[str, str] = OrderedDict()  # message id -> why it is not held
        self._wake = anyio.Event()
        self._closed = False

    def __len__(self) -> int:
        return len(self._held)

    def __contains__(self, message_id: str) -> bool:
        return message_id in self._held

    def count(self, owner: str | None) -> int:
        """How many requests the session `owner` holds."""
        return sum(1 for h in self._held.values() if h.owner == owner)

    def add(self, msg: AsyncMessage[Any], owner: str | None = None) -> None:
        """Hold `msg` (just claimed) for the session `owner`; its lease is renewed at once,
        then every third of it."""
        self._held[msg.id] = _Held(msg, owner, time.monotonic() + FIRST_RENEWAL, MIN_RENEWAL)
        self._gone.pop(msg.id, None)
        self._wake.set()

    def get(self, message_id: str, owner: str | None = None) -> AsyncMessage[Any]:
        """The request `message_id`, held for the session `owner`.

        Raises:
            NotHeld: never received, held by another session, already answered,
                expired or lost; the text says which.
        """
        held = self._held.get(message_id)
        if held is not None:
            if held.owner != owner:
                raise NotHeld(
                    f"request {message_id} is held by another session of this mailbox: "
                    "only the session whose check_inbox received it can answer it"
                )
            if _past(held.msg.expires_at):
                self._drop(message_id, _expired_text(held.msg))
            else:
                return held.msg
        why = self._gone.get(message_id)
        if why is None:
            why = (
                f"{message_id!r} is not a request held by this agent: use the id of a "
                "request that check_inbox returned (one-way messages need no answer)"
            )
        raise NotHeld(why)

    def settled(self, message_id: str, how: str) -> None:
        """Stop holding `message_id`: it was answered (`how` says so to a second answer)."""
        self._drop(message_id, f"request {message_id} was already {how}")

    def _drop(self, message_id: str, why: str) -> None:
        self._held.pop(message_id, None)
        self._gone[message_id] = why
        while len(self._gone) > _GONE_KEPT:
            self._gone.popitem(last=False)

    def release(self, owner: str | None) -> int:
        """Stop renewing the leases the session `owner` holds (it ended): they come back."""
        mine = [m for m, h in self._held.items() if h.owner == owner]
        for message_id in mine:
            self._drop(message_id, f"request {message_id} was released when its session ended")
        if mine:
            log.info("released %d held request(s) of ended session %s", len(mine), owner)
        return len(mine)

    def release_all(self) -> int:
        """Stop renewing every lease (the session ended): the server redelivers them."""
        count = len(self._held)
        for message_id in list(self._held):
            self._drop(message_id, f"request {message_id} was released when the session ended")
        self._closed = True
        self._wake.set()
        return count

    async def renew_forever(self) -> None:
        """Renew the leases as they come due, until `release_all()`."""
        while not self._closed:
            now = time.monotonic()
            due = [h for h in self._held.values() if h.next_due <= now]
            for held in due:
                await self._renew(held)
            times = [h.next_due for h in self._held.values()]
            delay = max(0.0, min(times) - time.monotonic()) if times else 5.0
            with anyio.move_on_after(delay):
                await self._wake.wait()
            self._wake = anyio.Event()

    async def _renew(self, held: _Held) -> None:
        msg = held.msg
        if _past(msg.expires_at):
            # The requester has given up: stop renewing; whoever claims it next records
            # it as expired (the Mailbox does), so the record still says what happened.
            self._drop(msg.id, _expired_text(msg))
            return
        try:
            beat = await self.mailbox.client.executions.heartbeat(
                msg.execution_id, worker_id=self.mailbox.worker_id
            )
        except (Forbidden, Conflict, NotFound) as exc:
            log.warning("lost the lease of request %s: %s", msg.id, exc)
            self._drop(
                msg.id,
                f"request {msg.id} is no longer held: its lease was lost ({exc}); "
                "it will be delivered again",
            )
            return
        except CuemsgError as exc:  # a transient failure: try again soon
            log.warning("could not renew the lease of request %s: %s", msg.id, exc)
            held.next_due = time.monotonic() + max(held.interval, 1.0)
            return
        until = _timestamp(beat.lease_extended_until)
        if until is not None:
            held.interval = max((until - time.time()) / 3.0, MIN_RENEWAL)
        held.next_due = time.monotonic() + held.interval


def _past(deadline: datetime | None) -> bool:
    return deadline is not None and deadline.timestamp() <= time.time()


def _expired_text(msg: AsyncMessage[Any]) -> str:
    when = msg.expires_at.isoformat() if msg.expires_at is not None else "its deadline"
    return f"request {msg.id} expired at {when}: the requester has stopped waiting for a reply"


def _timestamp(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
