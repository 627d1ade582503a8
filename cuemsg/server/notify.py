"""Wake-ups for long-polling claims (`claim.wait`).

A waiter subscribes to (tenant, task) *before* it tries to claim, so a fire
that commits between its failed claim and its wait still wakes it. Waiters
with no task filter hear every fire of their tenant. This is in-process only;
the PostgreSQL backend feeds it from LISTEN/NOTIFY so other replicas' fires
wake local waiters too.
"""

from __future__ import annotations

import asyncio
import contextlib

_Key = tuple[str, "str | None"]


class Waiter:
    """One subscription; `wait()` returns True when woken, False on timeout."""

    __slots__ = ("_fut", "_key", "_notifier")

    def __init__(self, notifier: Notifier, key: _Key) -> None:
        self._notifier = notifier
        self._key = key
        self._fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(asyncio.shield(self._fut), timeout)
            return True
        except asyncio.TimeoutError:
            return False

    def close(self) -> None:
        waiters = self._notifier._waiters.get(self._key)
        if waiters is not None:
            waiters.discard(self)
            if not waiters:
                del self._notifier._waiters[self._key]
        if not self._fut.done():
            self._fut.cancel()

    def _wake(self) -> None:
        if not self._fut.done():
            self._fut.set_result(None)


class Notifier:
    """Maps (tenant, task) to the claims waiting for it."""

    def __init__(self) -> None:
        self._waiters: dict[_Key, set[Waiter]] = {}

    def subscribe(self, tenant_id: str, task: str | None) -> Waiter:
        key = (tenant_id, task)
        waiter = Waiter(self, key)
        self._waiters.setdefault(key, set()).add(waiter)
        return waiter

    def notify(self, tenant_id: str, task: str | None) -> None:
        """Work arrived for `task` (None: unknown task, wake every waiter of the tenant)."""
        if not self._waiters:
            return
        if task is None:
            keys = [k for k in self._waiters if k[0] == tenant_id]
        else:
            keys = [(tenant_id, task), (tenant_id, None)]
        for key in keys:
            for waiter in self._waiters.pop(key, ()):
                waiter._wake()

    def waiting(self) -> int:
        return sum(len(s) for s in self._waiters.values())

    def close(self) -> None:
        for waiters in self._waiters.values():
            for waiter in waiters:
                with contextlib.suppress(Exception):
                    waiter._wake()
        self._waiters.clear()
