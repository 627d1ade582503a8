"""Per-tenant limits: quotas on what a tenant keeps (unsettled executions,
stored payload bytes) and sliding windows on how often it, or a client
address, may call.

Quota answers name the quota in the message and in `error.field` (`quota`):

| quota | answer |
|---|---|
| `pending_executions` | 429 `quota_exceeded`, `Retry-After`: settling work frees room |
| `stored_bytes` | 507 `quota_exceeded`: purging (retention) frees room |
| `requests_per_minute` | 429 `rate_limited`, `Retry-After` |
| `registrations_per_minute` | 429 `rate_limited`, `Retry-After` (per client address) |

Usage is read from storage at most every `PENDING_REFRESH` seconds per tenant
(stored bytes, a scan of the tenant's rows, every `BYTES_REFRESH`) and
counted forward by the fires this process accepts in between, so one query
serves many fires; a fire that would pass a quota re-reads first, so a
tenant whose work was settled meanwhile is not refused on stale numbers.
Several replicas each count their own fires between reads: the quota holds
to within what they accept in one refresh period.
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass

from cuemsg.server.errors import ApiProblem
from cuemsg.server.storage.base import Storage

#: Seconds a tenant's unsettled count read from storage is trusted (counted forward).
PENDING_REFRESH = 2.0
#: The same for its stored bytes (a scan of its rows, so read less often).
BYTES_REFRESH = 30.0
#: A fire that would pass a quota re-reads usage older than this first.
REREAD_AFTER = 0.25


@dataclass
class Usage:
    pending: int = 0
    stored_bytes: int = 0
    pending_read_at: float = -1e9
    bytes_read_at: float = -1e9


class Quotas:
    """The stored-state quotas of every tenant of one server."""

    def __init__(self, storage: Storage, *, pending: int, stored_bytes: int) -> None:
        self.storage = storage
        self.pending = pending
        self.stored_bytes = stored_bytes
        self._usage: dict[str, Usage] = {}

    async def _refresh(self, tenant_id: str, pending_age: float, bytes_age: float) -> Usage:
        """The tenant's usage, re-read where older than the ages given."""
        usage = self._usage.setdefault(tenant_id, Usage())
        now = time.monotonic()
        if self.pending and now - usage.pending_read_at > pending_age:
            usage.pending = await self.storage.count_unsettled(tenant_id)
            usage.pending_read_at = now
        if self.stored_bytes and now - usage.bytes_read_at > bytes_age:
            usage.stored_bytes = await self.storage.stored_bytes(tenant_id)
            usage.bytes_read_at = now
        return usage

    def _over(self, usage: Usage, count: int, size: int) -> ApiProblem | None:
        if self.pending and usage.pending + count > self.pending:
            return ApiProblem(
                429,
                "quota_exceeded",
                f"tenant quota pending_executions reached: {usage.pending} of "
                f"{self.pending} executions are not settled yet; settle some and retry",
                field="pending_executions",
                headers={"Retry-After": "1"},
            )
        if self.stored_bytes and usage.stored_bytes + size > self.stored_bytes:
            return ApiProblem(
                507,
                "quota_exceeded",
                f"tenant quota stored_bytes reached: {usage.stored_bytes} of "
                f"{self.stored_bytes} bytes stored, this fire adds {size}",
                field="stored_bytes",
            )
        return None

    async def admit_fire(self, tenant_id: str, count: int, size: int) -> None:
        """Room for `count` new executions of about `size` payload bytes, or an
        `ApiProblem` naming the quota they would pass."""
        if not (self.pending or self.stored_bytes):
            return
        usage = await self._refresh(tenant_id, PENDING_REFRESH, BYTES_REFRESH)
        problem = self._over(usage, count, size)
        if problem is not None:
            usage = await self._refresh(tenant_id, REREAD_AFTER, REREAD_AFTER)
            problem = self._over(usage, count, size)
        if problem is not None:
            raise problem
        usage.pending += count
        usage.stored_bytes += size

    def forget(self) -> None:
        """Drop every cached usage (a purge changed what tenants store)."""
        self._usage.clear()


class Windows:
    """Sliding one-minute windows of calls, one per key (a tenant, an address)."""

    def __init__(self, per_minute: int, quota: str) -> None:
        self.per_minute = per_minute
        self.quota = quota
        self._calls: dict[str, deque[float]] = {}

    def hit(self, key: str) -> None:
        """Count one call for `key`; 429 `rate_limited` when the window is full."""
        if not self.per_minute:
            return
        now = time.monotonic()
        window = self._calls.setdefault(key, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.per_minute:
            retry_after = max(1, int(window[0] + 60.0 - now) + 1)
            raise ApiProblem(
                429,
                "rate_limited",
                f"quota {self.quota} reached: more than {self.per_minute} requests a minute",
                field=self.quota,
                headers={"Retry-After": str(retry_after)},
            )
        window.append(now)
        if len(self._calls) > 10_000:  # keys seen once long ago must not pile up
            self._calls = {k: w for k, w in self._calls.items() if w and w[-1] > now - 60.0}
