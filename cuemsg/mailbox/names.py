"""Mailbox names: look one up without creating it, resolve names to addresses, count
what waits in a mailbox, delete one.

A recipient is given either as an address (a cue id: `cue_` and 12 lowercase
letters or digits, as CueAPI makes them) or as a mailbox name. A name is
looked up by listing the tenant's cues (CueAPI has no lookup by name), so
each `Mailbox` resolves a name once and keeps the answer (`AddressBook`).

Everything here is a flow (see `_ops`): `Mailbox` and `AsyncMailbox` run
the same code.
"""

from __future__ import annotations

import contextlib
import difflib
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cuemsg._exceptions import MailboxError, MailboxNotFound, NotFound
from cuemsg.cueapi.models import Cue, Execution, ExecutionList
from cuemsg.mailbox._ops import DeleteCue, Flow, GetCue, ListCues, ListExecutions

if TYPE_CHECKING:  # the core imports this module; only its type is needed here
    from cuemsg.mailbox._core import MailboxCore

__all__ = ["MailboxAddress", "is_address"]

#: Cues (or executions) asked for per page while looking up or counting.
PAGE = 200
#: Close names offered by a failed lookup, at most.
NEAR_MATCHES = 3
#: Messages claimed at once by `delete(force=True)` to reject them.
CLAIM_BATCH = 100
#: The reason the messages waiting in a force-deleted mailbox are rejected with.
DELETED = "the mailbox was deleted"
_ADDRESS = re.compile(r"cue_[a-z0-9]{12}")


@dataclass(frozen=True)
class MailboxAddress:
    """A mailbox as `Mailbox.lookup` finds it.

    Attributes:
        name: its name (its cue's name).
        address: its cue id: what messages are sent to.
        task: the task its messages are claimed by.
    """

    name: str
    address: str
    task: str


def is_address(text: str) -> bool:
    """True when `text` is a cue id (`cue_` and 12 lowercase letters or digits)."""
    return _ADDRESS.fullmatch(text) is not None


def is_mailbox(cue: Cue) -> bool:
    """A mailbox is a worker cue whose payload names its task."""
    return cue.transport == "worker" and isinstance(cue.payload.get("task"), str)


def _found(cue: Cue) -> MailboxAddress:
    if not is_mailbox(cue):
        raise MailboxError(
            f"the cue {cue.name!r} ({cue.id}) is a {cue.transport} cue with no payload task, "
            "not a mailbox"
        )
    return MailboxAddress(name=cue.name, address=cue.id, task=str(cue.payload["task"]))


def lookup(name: str) -> Flow[MailboxAddress]:
    """The mailbox named `name` (or at the address `name`); never creates one.

    Raises:
        MailboxNotFound: no mailbox has that name (`.near`: close names).
        NotFound: no cue has that address.
        MailboxError: the cue of that name is not a mailbox.
        ValueError: `name` is empty.
    """
    if not name:
        raise ValueError("a mailbox name (or address) must not be empty")
    if is_address(name):
        cue = yield GetCue(name)
        return _found(cue)
    names: list[str] = []
    offset = 0
    while True:
        listing = yield ListCues(offset=offset, limit=PAGE)
        for cue in listing.cues:
            if cue.name == name:
                return _found(cue)
            if is_mailbox(cue):
                names.append(cue.name)
        offset += len(listing.cues)
        if not listing.cues or offset >= listing.total:
            break
    raise MailboxNotFound(name, difflib.get_close_matches(name, names, n=NEAR_MATCHES))


class AddressBook:
    """The names one mailbox has resolved, each looked up once.

    Args:
        own: this mailbox's name and address (sending to itself costs no lookup).
    """

    def __init__(self, own: MailboxAddress) -> None:
        self._lock = threading.Lock()  # sync mailboxes send from several threads
        self._by_name = {own.name: own.address}

    def resolve(self, to: str) -> Flow[str]:
        """The address of `to`, a mailbox name or an address (kept as is).

        Raises:
            MailboxNotFound: no mailbox has that name (`.near`: close names).
            MailboxError: the cue of that name is not a mailbox.
            ValueError: `to` is empty.
        """
        if is_address(to):
            return to
        with self._lock:
            known = self._by_name.get(to)
        if known is not None:
            return known
        found = yield from lookup(to)
        with self._lock:
            self._by_name[to] = found.address
        return found.address

    def forget(self, address: str) -> None:
        """Drop the names that led to `address` (its cue is gone: look them up again)."""
        with self._lock:
            for name in [n for n, a in self._by_name.items() if a == address]:
                del self._by_name[name]


def count_waiting(address: str, task: str) -> Flow[int]:
    """Messages waiting in the mailbox at `address`: pending, not yet claimed.

    Only its own task's count: replies to its requests travel on the same cue
    under another task and are not counted. A record that does not show its
    payload (the hosted service may leave it out) counts as waiting.
    """
    waiting = 0
    offset = 0
    while True:
        page: ExecutionList = yield ListExecutions(address, "pending", offset, PAGE)
        waiting += sum(1 for exe in page.executions if _waits_for(exe, task))
        offset += len(page.executions)
        if not page.executions or offset >= page.total:
            return waiting


def _waits_for(exe: Execution, task: str) -> bool:
    return exe.payload is None or exe.task == task


def delete_mailbox(core: MailboxCore, *, force: bool) -> Flow[int]:
    """Delete the mailbox's cue; refuse while messages wait unless `force`.

    With `force`, the messages waiting are claimed and rejected first
    ("the mailbox was deleted"), so each keeps an outcome (a dead letter;
    a request's requester gets `NoReply`) and none is left for a mailbox
    opened later on the same task. Its topic subscriptions go with it.
    Answers how many were waiting.

    Raises:
        MailboxError: messages are waiting and `force` is False.
    """
    info = core.info
    waiting = yield from count_waiting(info.address, info.task)
    if waiting and not force:
        raise MailboxError(
            f"the mailbox {info.name!r} has {waiting} message(s) waiting: receive them first, "
            f"or delete it anyway with force=True (`cuemsg mailbox delete {info.name} --force`)"
        )
    while waiting:
        claims = yield from core.claim(info.task, None, CLAIM_BATCH)
        if not claims:
            break  # the rest are scheduled for later, or went to another receiver
        for claimed in claims:
            msg = yield from core.admit(claimed)
            if msg is not None:
                yield from core._quiet(core.reject(msg, DELETED))
    for sub in (yield from core.subscriptions()):
        with contextlib.suppress(NotFound):  # unsubscribed meanwhile
            yield DeleteCue(sub.cue_id)
    yield DeleteCue(info.address)
    return waiting
