"""Wake-ups for long-polling claims (`claim.wait`).

A waiter subscribes to (tenant, task) *before* it tries to claim, so a fire
that commits between its failed claim and its wait still wakes it. Waiters
with no task filter hear every fire of their tenant.

`notify(tenant, task, count)` wakes `count` waiters, oldest first (those on
the task before the tenant-wide ones), not all of them: waking every waiter
for one message makes all but one run a claim that finds nothing. A woken
waiter that leaves without claiming hands its wake on (`Waiter.pass_on`), so
no wake is lost. Waiters with an `agent` filter cannot tell from here whether
the work is theirs, so they are all woken.

A waiter may also take work handed to it (`Handoff`: its worker id, lease
and how many it takes): a fire claims a new execution for the oldest such waiter
inside the fire's own transaction or statement (`taker`, then `Waiter.hand` after the
commit), so the woken claim answers at once instead of running a claim
transaction of its own. The claim handler delivers what it was handed, or
releases it if its client is gone. A taken waiter's `wait` lasts until it is
handed its work (or nothing), even past its timeout: on PostgreSQL the fire
awaits its statement between the two.

This is in-process only; the PostgreSQL backend feeds it from LISTEN/NOTIFY
so other replicas' fires wake local waiters too (a fire hands work only to this
replica's waiters).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

_Key = tuple[str, "str | None"]


@dataclass(frozen=True, slots=True)
class Handoff:
    """What a fire needs to claim work for a waiting claim: for whom, how long, how
    many, and the outcomes the claim carries (`claim.settle`) to record in the same
    transaction, if they ride on the hand-over (see `handlers/claims.py`)."""

    worker_id: str
    lease_seconds: float
    limit: int = 1
    settle: tuple[tuple[str, Any], ...] = ()


class Waiter:
    """One subscription; `wait()` returns True when woken, False on timeout."""

    __slots__ = (
        "_fut",
        "_key",
        "_notifier",
        "agent",
        "handed",
        "handoff",
        "parked",
        "settled",
        "taken",
    )

    def __init__(
        self,
        notifier: Notifier,
        key: _Key,
        agent: str | None,
        handoff: Handoff | None = None,
    ) -> None:
        self._notifier = notifier
        self._key = key
        self.agent = agent
        #: A fire may claim work for this waiter as this says (see `hand`).
        self.handoff = handoff
        #: What a fire claimed for this waiter, once handed (the handler owns it then).
        self.handed: list[Any] | None = None
        #: The outcomes of `handoff.settle` as recorded with the hand-over, in order.
        self.settled: list[Any] | None = None
        #: A fire took this waiter (`Notifier.taker`): `hand` follows, once its write ends.
        self.taken = False
        #: In `wait` now: only a parked claim is handed work. One still running its
        #: own claim statement (PostgreSQL awaits it) is woken instead, so it never
        #: ends up with two lots of work, or leaves with work it was not told of.
        self.parked = False
        self._fut: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()

    async def wait(self, timeout: float) -> bool:
        """Whether woken within `timeout` seconds; once taken by a fire, until handed."""
        self.parked = True
        try:
            await asyncio.wait_for(asyncio.shield(self._fut), timeout)
            return True
        except asyncio.TimeoutError:
            if not self.taken:
                return False
            # Work is being claimed for us: leaving now would strand it under our lease.
            await asyncio.shield(self._fut)
            return True
        finally:
            self.parked = False

    @property
    def woken(self) -> bool:
        return self._fut.done() and not self._fut.cancelled()

    def pass_on(self) -> None:
        """This waiter was woken but will not claim: wake the next one instead.
        (Work handed to it is not passed on: its handler delivers or releases it.)"""
        if self.woken and self.handed is None:
            self._notifier.notify(self._key[0], self._fut.result())

    def hand(self, claimed: list[Any], settled: list[Any] | None = None) -> None:
        """Wake this waiter with executions claimed for it (taken by `Notifier.taker`)
        and its carried outcomes as recorded (None: not recorded, the claim records them)."""
        self.handed = claimed or None  # nothing: woken to claim as usual
        self.settled = settled
        notifier = self._notifier
        notifier.handed += len(claimed)
        for row in settled or ():
            outcome = getattr(row, "outcome", None)  # an ApiProblem (refused) has none
            if outcome is not None:
                notifier.settled[outcome.success] += 1
        self._wake(self._key[1])

    def close(self) -> None:
        waiters = self._notifier._waiters.get(self._key)
        if waiters is not None:
            waiters.pop(self, None)
            if not waiters:
                del self._notifier._waiters[self._key]
        if not self._fut.done():
            self._fut.cancel()

    def _wake(self, task: str | None) -> None:
        if not self._fut.done():
            self._fut.set_result(task)


class Notifier:
    """Maps (tenant, task) to the claims waiting for it, in arrival order."""

    def __init__(self) -> None:
        # dicts as ordered sets: the oldest waiter is woken first
        self._waiters: dict[_Key, dict[Waiter, None]] = {}
        #: Called on every notify (the server wakes its event streams with it).
        self.on_notify: Callable[[], None] | None = None
        #: Executions fires claimed for waiters so far (counted as claims by /metrics).
        self.handed = 0
        #: Outcomes recorded with those hand-overs so far, failed and succeeded
        #: (indexed by `success`; counted as outcomes by /metrics).
        self.settled = [0, 0]

    def subscribe(
        self,
        tenant_id: str,
        task: str | None,
        agent: str | None = None,
        handoff: Handoff | None = None,
    ) -> Waiter:
        key = (tenant_id, task)
        waiter = Waiter(self, key, agent, handoff if agent is None else None)
        self._waiters.setdefault(key, {})[waiter] = None
        return waiter

    def taker(self, tenant_id: str, task: str | None) -> Waiter | None:
        """The waiter a new execution of `task` would wake first, if it takes handed work;
        removed from the waiting (the caller hands it work, or wakes it if that fails)."""
        keys = [(tenant_id, task)] if task is None else [(tenant_id, task), (tenant_id, None)]
        for key in keys:
            waiters = self._waiters.get(key)
            for waiter in waiters or ():
                if waiter.agent is not None:
                    continue  # woken by every notify anyway: it cannot be handed work
                if waiter.handoff is None or waiter._fut.done() or not waiter.parked:
                    return None  # the oldest waiter is woken the usual way
                del waiters[waiter]  # type: ignore[union-attr]
                if not waiters:
                    del self._waiters[key]
                waiter.taken = True
                return waiter
        return None

    def notify(self, tenant_id: str, task: str | None, count: int = 1) -> None:
        """`count` executions of `task` became claimable for this tenant."""
        if self.on_notify is not None:
            self.on_notify()
        if not self._waiters:
            return
        keys = [(tenant_id, task)] if task is None else [(tenant_id, task), (tenant_id, None)]
        for key in keys:
            waiters = self._waiters.get(key)
            if not waiters:
                continue
            for waiter in list(waiters):
                if waiter.agent is None:
                    if count <= 0:
                        continue
                    count -= 1
                del waiters[waiter]
                waiter._wake(task)
            if not waiters:
                del self._waiters[key]

    def wake_all(self) -> None:
        """Wake every waiter (shutdown, or notifications may have been missed)."""
        waiters, self._waiters = self._waiters, {}
        for group in waiters.values():
            for waiter in group:
                waiter._wake(waiter._key[1])

    def waiting(self) -> int:
        return sum(len(s) for s in self._waiters.values())

    def close(self) -> None:
        self.wake_all()
