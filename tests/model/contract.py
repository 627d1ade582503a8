"""A small pure model of the execution contract (docs/cueapi.md): what each call
should answer and how it changes the executions, with no I/O.

`test_state_machine.py` drives the real server and this model side by side and
compares every answer and every execution after every step.

    pending/retry_ready --claim--> delivering --outcome--> success | failed
    delivering --lease ran out, swept--> pending, or failed at the claim cap
    delivering --released by its holder--> pending, the claim not counted
    pending never claimed past the unclaimed timeout, swept--> missed
"""

from __future__ import annotations

from dataclasses import dataclass, field

CLAIMABLE = ("pending", "retry_ready")


@dataclass
class Execution:
    id: str
    cue_id: str
    task: str
    seq: int  # fire order: the tie-break after scheduled_for
    scheduled_for: float
    max_attempts: int
    status: str = "pending"
    attempts: int = 0
    holder: str | None = None
    lease_until: float | None = None
    outcome: bool | None = None  # the recorded outcome's `success`, once there is one
    capped: bool = False  # failed by the sweep at the claim cap


@dataclass(frozen=True)
class Refused:
    """An error answer the contract calls for."""

    status: int
    code: str


@dataclass
class Contract:
    lease_seconds: float
    unclaimed_timeout: float
    now: float
    executions: dict[str, Execution] = field(default_factory=dict)
    # (cue id, idempotency key) -> (the fire body, key aside; execution id)
    keys: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)

    # -- fire ------------------------------------------------------------------

    def fire_known(self, cue_id: str, key: str | None, body: str) -> str | Refused | None:
        """The execution a keyed fire repeats, a conflict, or None for a new fire."""
        if key is None or (cue_id, key) not in self.keys:
            return None
        first_body, execution_id = self.keys[(cue_id, key)]
        if first_body != body:
            return Refused(409, "idempotency_key_conflict")
        return execution_id

    def fired(
        self,
        execution_id: str,
        cue_id: str,
        task: str,
        max_attempts: int,
        send_at: float | None,
        key: str | None,
        body: str,
    ) -> Execution:
        when = self.now if send_at is None else max(send_at, self.now)
        execution = Execution(execution_id, cue_id, task, len(self.executions), when, max_attempts)
        self.executions[execution_id] = execution
        if key is not None:
            self.keys[(cue_id, key)] = (body, execution_id)
        return execution

    # -- claims ----------------------------------------------------------------

    def claimable(self, task: str | None = None) -> list[Execution]:
        ready = [
            e
            for e in self.executions.values()
            if e.status in CLAIMABLE
            and e.scheduled_for <= self.now
            and (task is None or e.task == task)
        ]
        return sorted(ready, key=lambda e: (e.scheduled_for, e.seq))

    def _take(self, e: Execution, worker: str) -> None:
        e.status = "delivering"
        e.attempts += 1
        e.holder = worker
        e.lease_until = self.now + self.lease_seconds

    def claim(self, execution_id: str, worker: str) -> Execution | Refused:
        e = self.executions.get(execution_id)
        if e is None:
            return Refused(404, "execution_not_found")
        if e not in self.claimable():
            return Refused(409, "claim_failed")
        self._take(e, worker)
        return e

    def claim_next(self, worker: str, task: str | None, limit: int) -> list[Execution]:
        taken = self.claimable(task)[:limit]
        for e in taken:
            self._take(e, worker)
        return taken

    # -- leases and outcomes -----------------------------------------------------

    def _lease_problem(self, e: Execution, worker: str | None) -> Refused | None:
        if e.status != "delivering":
            return Refused(409, "execution_not_claiming")
        if worker is not None and e.holder != worker:
            return Refused(403, "not_execution_owner")
        return None

    def heartbeat(self, execution_id: str, worker: str | None) -> Execution | Refused:
        e = self.executions.get(execution_id)
        if e is None:
            return Refused(404, "execution_not_found")
        problem = self._lease_problem(e, worker)
        if problem is not None:
            return problem
        e.lease_until = self.now + self.lease_seconds
        return e

    def outcome(self, execution_id: str, worker: str | None, success: bool) -> Execution | Refused:
        e = self.executions.get(execution_id)
        if e is None:
            return Refused(404, "execution_not_found")
        if e.outcome is not None:
            return Refused(409, "outcome_already_recorded")
        problem = self._lease_problem(e, worker)
        if problem is not None:
            return problem
        e.status = "success" if success else "failed"
        e.outcome = success
        e.lease_until = None
        return e

    def release(self, execution_id: str, worker: str) -> Execution | Refused:
        """`executions.release`: pending again at once, the claim not counted."""
        e = self.executions.get(execution_id)
        if e is None:
            return Refused(404, "execution_not_found")
        problem = self._lease_problem(e, worker)
        if problem is not None:
            return problem
        e.status = "pending"
        e.attempts -= 1
        e.holder = None
        e.lease_until = None
        return e

    # -- time ------------------------------------------------------------------

    def sweep(self) -> None:
        """What one pass of the sweeper does at `now`."""
        for e in self.executions.values():
            if e.status == "delivering" and e.lease_until is not None and e.lease_until < self.now:
                e.lease_until = None
                if e.attempts >= e.max_attempts:  # the claim cap
                    e.status = "failed"
                    e.outcome = False
                    e.capped = True
                else:
                    e.status = "pending"
                    e.holder = None
            elif (
                self.unclaimed_timeout > 0
                and e.status in CLAIMABLE
                and e.attempts == 0
                and e.scheduled_for < self.now - self.unclaimed_timeout
            ):
                e.status = "missed"
