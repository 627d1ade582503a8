"""Mailbox names and addresses for the MCP tools: who is there, and who `to` means.

A mailbox is a worker cue whose payload names its task; its name is the
cue's name and its address the cue id. A `to` (a name or an address) is
resolved by the library's own lookup (`AsyncMailbox.lookup`), which never
creates anything; this module adds what the tools need on top: the list of
the tenant's mailboxes, an unknown name's error naming the mailboxes that
do exist (for an LLM to pick from), names of addresses, and presence.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cuemsg._exceptions import ExtensionNotAvailable, MailboxError, MailboxNotFound, NotFound
from cuemsg.cueapi import AsyncCueClient
from cuemsg.cueapi.models import Cue, Worker
from cuemsg.mailbox.aio import AsyncMailbox
from cuemsg.mailbox.names import is_mailbox

__all__ = ["MAX_NAMES_SHOWN", "PRESENCE_TTL", "Directory", "MailboxEntry", "UnknownMailbox"]

#: An unknown name's error lists at most this many of the names that exist.
MAX_NAMES_SHOWN = 20
#: A responder counts as alive if it was seen this recently (the Mailbox's default).
PRESENCE_TTL = 60.0
#: Where serving mailboxes stamp their presence on servers without `workers.list`.
_PRESENCE_KEY = "cuemsg_presence"
_PAGE = 100


class UnknownMailbox(LookupError):
    """`to` names no mailbox; the message lists the mailboxes that exist."""


@dataclass(frozen=True)
class MailboxEntry:
    """One mailbox of the tenant."""

    name: str
    address: str
    task: str


def _entry(cue: Cue) -> MailboxEntry:
    return MailboxEntry(name=cue.name, address=cue.id, task=str(cue.payload["task"]))


def _parse_time(value: Any) -> float | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


class Directory:
    """Lists and resolves mailboxes over one client; names of addresses are cached."""

    def __init__(self, client: AsyncCueClient) -> None:
        self.client = client
        self._names: dict[str, str] = {}  # address -> name

    async def cues(self) -> list[Cue]:
        """Every mailbox cue of the tenant, page by page."""
        found: list[Cue] = []
        offset = 0
        while True:
            page = await self.client.cues.list(limit=_PAGE, offset=offset)
            found.extend(c for c in page.cues if is_mailbox(c))
            offset += len(page.cues)
            if not page.cues or offset >= page.total:
                break
        for cue in found:
            self._names[cue.id] = cue.name
        return found

    async def mailboxes(self) -> list[MailboxEntry]:
        return [_entry(c) for c in await self.cues()]

    async def resolve(self, to: str) -> MailboxEntry:
        """The mailbox `to` names: an address (`cue_...`) or a mailbox name.

        Raises:
            UnknownMailbox: no mailbox has that name or address.
        """
        to = to.strip()
        if not to:
            raise UnknownMailbox("`to` is empty: give a mailbox name or address")
        try:
            found = await AsyncMailbox.lookup(self.client, to)
        except (MailboxError, NotFound) as exc:
            # MailboxNotFound (a name; `.near`: close names), no cue at that address,
            # or a cue that is not a mailbox (MailboxError).
            near = exc.near if isinstance(exc, MailboxNotFound) else []
            hint = f" (did you mean {', '.join(repr(n) for n in near)}?)" if near else ""
            raise UnknownMailbox(
                f"no mailbox is named or addressed {to!r}{hint}. {await self._existing()}"
            ) from exc
        self._names[found.address] = found.name
        return MailboxEntry(name=found.name, address=found.address, task=found.task)

    async def _existing(self) -> str:
        """The sentence listing the mailboxes that exist (up to `MAX_NAMES_SHOWN`)."""
        names = sorted(c.name for c in await self.cues())
        shown = ", ".join(names[:MAX_NAMES_SHOWN]) or "(none)"
        more = f" and {len(names) - MAX_NAMES_SHOWN} more" if len(names) > MAX_NAMES_SHOWN else ""
        return f"Mailboxes that exist: {shown}{more}."

    async def name_of(self, address: str | None) -> str | None:
        """The name of the mailbox at `address` (None if unknown or gone)."""
        if address is None:
            return None
        if address not in self._names:
            try:
                cue = await self.client.cues.get(address)
            except NotFound:
                return None
            self._names[address] = cue.name
        return self._names[address]

    async def responders(self, cues: list[Cue]) -> set[str]:
        """Addresses of the mailboxes a serving worker was seen on lately."""
        now = time.time()
        try:
            workers: list[Worker] | None = await self.client.workers.list()
        except ExtensionNotAvailable:
            workers = None
        alive: set[str] = set()
        for cue in cues:
            task = str(cue.payload["task"])
            if workers is not None:
                seen = [_parse_time(w.last_heartbeat) for w in workers if task in w.handlers]
            else:
                stamp = cue.payload.get(_PRESENCE_KEY)
                seen = [_parse_time(stamp.get("at"))] if isinstance(stamp, dict) else []
            if any(t is not None and now - t <= PRESENCE_TTL for t in seen):
                alive.add(cue.id)
        return alive
