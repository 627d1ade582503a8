"""Checked by mypy in tests/typing/test_types.py, never run: what the typed surface reveals."""

from __future__ import annotations

import msgspec
from pydantic import BaseModel

from cuemsg import AsyncMailbox, CueClient, Mailbox


class Order(BaseModel):
    id: int


class Total(msgspec.Struct):
    cents: int


def sync_surface(client: CueClient, mb: Mailbox) -> None:
    reveal_type(client.cues.fire("cue_x", {"a": 1}))
    reveal_type(client.executions.claim_next(worker_id="w", task="t"))
    reveal_type(mb.request("cue_x", Order(id=1), timeout=5, type=Total))
    reveal_type(mb.request("cue_x", {"q": 1}, timeout=5))
    for msg in mb.receive(wait=1, type=Order):
        reveal_type(msg.body)


async def async_surface(mb: AsyncMailbox) -> None:
    reveal_type(await mb.request("cue_x", 1, timeout=5, type=Order))
