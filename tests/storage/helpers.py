"""Helpers for the storage suites: open a backend by URL, make tenants, cues and fires."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from typing import Any

from cuemsg.server.app import open_storage
from cuemsg.server.errors import ApiProblem
from cuemsg.server.notify import Handoff, Notifier, Waiter
from cuemsg.server.settings import ServerSettings
from cuemsg.server.storage.base import CueRow, NewFire, Storage

T0 = 1_700_000_000.0  # a fixed "now": the storage takes time as an argument


@contextlib.asynccontextmanager
async def opened(db_url: str) -> AsyncIterator[Storage]:
    """The backend `db_url` names (as the server picks it), open for the block."""
    storage = open_storage(ServerSettings(db=db_url))
    await storage.open()
    try:
        yield storage
    finally:
        await storage.close()


async def tenant(storage: Storage) -> str:
    tenant_id = "ten_" + secrets.token_hex(8)
    await storage.create_tenant(tenant_id, "t@example.com", secrets.token_hex(32), T0)
    return tenant_id


async def make_cue(
    storage: Storage, tenant_id: str, task: str | None = "t", *, max_attempts: int = 3, **kw: Any
) -> CueRow:
    cue = CueRow(
        id="cue_" + secrets.token_hex(6),
        tenant_id=tenant_id,
        name=kw.pop("name", None) or f"cue-{secrets.token_hex(4)}",
        payload={"task": task} if task is not None else {},
        retry={"max_attempts": max_attempts, "backoff_minutes": [1, 5, 15]},
        created_at=T0,
        updated_at=T0,
        **kw,
    )
    return await storage.create_cue(cue)


def new_fire(cue_id: str, at: float = T0, **kw: Any) -> NewFire:
    return NewFire(cue_id=cue_id, scheduled_for=at, **kw)


def keyed(cue_id: str, key: str, body: str = "same", at: float = T0, **kw: Any) -> NewFire:
    return NewFire(
        cue_id=cue_id, scheduled_for=at, idempotency_key=key, body_hash=f"hash-{body}", **kw
    )


async def problem_of(call: Any) -> ApiProblem:
    """Await `call` and return the ApiProblem it must raise."""
    try:
        await call
    except ApiProblem as p:
        return p
    raise AssertionError("expected an ApiProblem")


_parked: set[asyncio.Task[bool]] = set()  # the waits in progress (kept from the collector)


async def parked(
    notifier: Notifier,
    tenant_id: str,
    task: str | None,
    agent: str | None = None,
    handoff: Handoff | None = None,
) -> Waiter:
    """A claim parked as the claim handler parks one: subscribed, and waiting in
    `Waiter.wait` (a fire hands work only to a claim that is waiting)."""
    waiter = notifier.subscribe(tenant_id, task, agent, handoff)
    wait = asyncio.ensure_future(waiter.wait(60))
    _parked.add(wait)
    wait.add_done_callback(_parked.discard)
    await asyncio.sleep(0)  # into the wait
    assert waiter.parked
    return waiter
