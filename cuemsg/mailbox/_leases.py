"""What a mailbox holds between a claim and its outcome: leases, waiting acks, presence."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cuemsg.cueapi.models import OutcomeRequest
from cuemsg.mailbox._config import FALLBACK_LEASE_SECONDS

# -- leases -----------------------------------------------------------------------------------


@dataclass
class _Lease:
    interval: float
    next_due: float
    lost: BaseException | None = None


class LeaseBook:
    """The leases a mailbox holds, and when each must be renewed.

    A lease is renewed every third of its length, from the claim on, so a
    handler running past a third of the lease keeps it; a refused renewal
    (403 another worker has it, 409 it is no longer being delivered) marks
    it lost, and the message's settlement then raises `LeaseLost`.
    """

    def __init__(self, on_hold: Callable[[float], None] | None = None) -> None:
        self._held: dict[str, _Lease] = {}
        self._lock = threading.Lock()
        self.on_hold = on_hold

    def __contains__(self, execution_id: str) -> bool:
        return execution_id in self._held

    def __len__(self) -> int:
        return len(self._held)

    def hold(self, execution_id: str, lease_seconds: float | None, now: float) -> None:
        """Start renewing the lease of `execution_id` (claimed at `now`)."""
        interval = max((lease_seconds or FALLBACK_LEASE_SECONDS) / 3.0, 0.05)
        with self._lock:
            self._held[execution_id] = _Lease(interval=interval, next_due=now + interval)
        if self.on_hold is not None:
            self.on_hold(now + interval)

    def release(self, execution_id: str) -> None:
        """Stop renewing (the message was settled, or given up)."""
        with self._lock:
            self._held.pop(execution_id, None)

    def pause(self, execution_ids: Sequence[str]) -> None:
        """Renew none of these while their outcomes are in flight (on a long-polling
        claim, `claim.settle`: recorded when it starts, answered when it ends)."""
        with self._lock:
            for execution_id in execution_ids:
                lease = self._held.get(execution_id)
                if lease is not None:
                    lease.next_due = float("inf")

    def resume(self, execution_ids: Sequence[str], now: float) -> None:
        """Renew these again, at once (their outcomes did not get through)."""
        with self._lock:
            for execution_id in execution_ids:
                lease = self._held.get(execution_id)
                if lease is not None and lease.next_due == float("inf"):
                    lease.next_due = now

    def due(self, now: float) -> list[str]:
        """Leases to renew now; each is rescheduled one interval later."""
        out: list[str] = []
        with self._lock:
            for execution_id, lease in self._held.items():
                if lease.lost is None and lease.next_due <= now:
                    lease.next_due = now + lease.interval
                    out.append(execution_id)
        return out

    def next_due(self) -> float | None:
        """When the next renewal is due (None when nothing is held)."""
        with self._lock:
            times = [lease.next_due for lease in self._held.values() if lease.lost is None]
        return min(times) if times else None

    def mark_lost(self, execution_id: str, why: BaseException) -> bool:
        """Record that the lease is gone; True the first time."""
        with self._lock:
            lease = self._held.get(execution_id)
            if lease is None or lease.lost is not None:
                return False
            lease.lost = why
            return True

    def lost(self, execution_id: str) -> BaseException | None:
        """Why the lease was lost, or None while it holds."""
        with self._lock:
            lease = self._held.get(execution_id)
            return None if lease is None else lease.lost


# -- batched acks -----------------------------------------------------------------------------


@dataclass
class PendingAck:
    """An ack that was decided (the message id is in the dedupe store) but not yet recorded."""

    outcome: OutcomeRequest
    message_id: str
    due: float  # monotonic time by which it is to be sent
    tries: int = 0  # reports of it that failed in transit


class AckQueue:
    """Acks waiting to be recorded together with one `report_outcomes` (thread-safe).

    The lease of each waiting ack stays held (and renewed) until its report
    is answered. `on_due` is called when an ack is added, so a heartbeat
    loop sleeping past the ack's due time wakes up to send it.
    """

    def __init__(self) -> None:
        self._items: list[PendingAck] = []
        self._lock = threading.Lock()
        self.on_due: Callable[[float], None] | None = None

    def __len__(self) -> int:
        return len(self._items)

    def add(self, item: PendingAck) -> int:
        """Queue `item`; answers how many acks wait now."""
        with self._lock:
            self._items.append(item)
            size = len(self._items)
        if self.on_due is not None:
            self.on_due(item.due)
        return size

    def take(self) -> list[PendingAck]:
        """Every waiting ack, removed from the queue (to be reported by the caller)."""
        with self._lock:
            items, self._items = self._items, []
        return items

    def put_back(self, items: Sequence[PendingAck], due: float) -> None:
        """Queue `items` again (their report failed in transit), to be sent at `due`."""
        if not items:
            return
        for item in items:
            item.due = due
        with self._lock:
            self._items[:0] = items
        if self.on_due is not None:
            self.on_due(due)

    def next_due(self) -> float | None:
        """When the earliest waiting ack is due (None when none waits)."""
        with self._lock:
            return min((item.due for item in self._items), default=None)

    def due(self, now: float) -> bool:
        """True when some waiting ack is due."""
        at = self.next_due()
        return at is not None and at <= now


# -- presence ---------------------------------------------------------------------------------


class Presence:
    """When a receiving mailbox next tells the server it is alive."""

    def __init__(self, interval: float) -> None:
        self.interval = interval
        self.active = False
        self.next_at = 0.0

    def start(self) -> None:
        if not self.active:
            self.active = True
            self.next_at = 0.0  # at once

    def stop(self) -> None:
        self.active = False

    def due(self, now: float) -> bool:
        if self.active and now >= self.next_at:
            self.next_at = now + self.interval
            return True
        return False

    def next_due(self) -> float | None:
        return self.next_at if self.active else None
