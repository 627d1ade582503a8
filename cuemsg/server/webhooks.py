"""Webhook delivery of the local CueAPI: the `Dispatcher` that POSTs
`transport: "webhook"` executions to their cue's `callback.url`, signed as
CueAPI signs them, with retries, final failure and `on_failure`.

- A bounded pool: at most `webhook_pool` deliveries in flight (httpx async,
  DNS in the loop's resolver thread), so webhooks never block the event loop
  or the message path. Each pass shares the free slots equally between the
  tenants with due deliveries, so one tenant's backlog cannot starve another.
- At least once: a delivery is leased (`Storage.claim_deliveries`) for the
  timeout plus a margin; a server that dies mid-delivery leaves the lease to
  run out, the sweep puts the execution back, and it is delivered again.
- A 2xx is success (the response's first 2,000 characters are the result);
  anything else, a timeout or a refused address is retried after
  `retry.backoff_minutes` (times `webhook_backoff_scale`) until
  `retry.max_attempts`, then `failed` with a readable error, and the cue's
  `on_failure` runs (`webhook`: a signed POST of the failure; `pause`).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx

from cuemsg import __version__
from cuemsg.server import timestamps
from cuemsg.server.schedules import complete_once
from cuemsg.server.settings import ServerSettings
from cuemsg.server.ssrf import Guard, UrlRefused
from cuemsg.server.storage.base import CueRow, ExecutionRow, OutcomeRecord, Storage
from cuemsg.webhook import canonical_body, sign

log = logging.getLogger("cuemsg.server")

#: Headers the server sets on a delivery; a cue's `callback.headers` cannot override them.
SIGNATURE_HEADERS = (
    "x-cueapi-signature",
    "x-cueapi-timestamp",
    "x-cueapi-cue-id",
    "x-cueapi-execution-id",
    "x-cueapi-scheduled-for",
    "x-cueapi-attempt",
)
RESULT_CHARS = 2000
DEFAULT_BACKOFF_MINUTES = (1, 5, 15)
LEASE_MARGIN = 5.0  # seconds a delivery's lease outlasts its timeout


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_hex(32)


async def tenant_secret(storage: Storage, tenant_id: str) -> str:
    """The tenant's webhook secret, made on first use."""
    return await storage.webhook_secret(tenant_id, new_webhook_secret(), replace=False)


def backoff_seconds(retry: dict[str, Any], failed_attempt: int, scale: float) -> float:
    """Seconds before the attempt after `failed_attempt` (1-based): the cue's
    `backoff_minutes` entry for it (the last one repeats), times `scale`."""
    minutes = list(retry.get("backoff_minutes") or DEFAULT_BACKOFF_MINUTES)
    return float(minutes[min(failed_attempt, len(minutes)) - 1]) * 60.0 * scale


def delivery_body(execution: ExecutionRow, cue: CueRow) -> dict[str, Any]:
    return {
        "execution_id": execution.id,
        "cue_id": cue.id,
        "name": cue.name,
        "scheduled_for": timestamps.render(execution.scheduled_for),
        "attempt": execution.attempts,
        "payload": execution.payload,
    }


def signed_headers(
    secret: str, body: bytes, now: float, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The cue's own headers (minus any signature header), then ours."""
    stamp = str(int(now))
    headers = {
        str(k): str(v) for k, v in (extra or {}).items() if str(k).lower() not in SIGNATURE_HEADERS
    }
    headers.update(
        {
            "Content-Type": "application/json",
            "User-Agent": f"cuemsg/{__version__}",
            "X-CueAPI-Timestamp": stamp,
            "X-CueAPI-Signature": sign(secret, stamp, body),
        }
    )
    return headers


class Dispatcher:
    """Delivers due webhook executions; `pump()` is one pass, `run_forever()` the task.

    Args:
        storage: the open backend.
        settings: pool size, timeout, backoff scale, and the SSRF guard's settings.
        now: the clock (UNIX seconds).
    """

    def __init__(
        self,
        storage: Storage,
        settings: ServerSettings,
        *,
        now: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.now = now
        self.guard = Guard(loopback_ok=settings.loopback, allow=settings.webhook_allow)
        self.inflight: set[asyncio.Task[None]] = set()
        self._turn = 0  # which tenant goes first this pass (round robin)
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:
            # No redirects: a 3xx is the receiver's answer (and could point anywhere).
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False)
        return self._client

    async def pump(self) -> int:
        """Start deliveries for what is due, within the pool; how many started."""
        free = self.settings.webhook_pool - len(self.inflight)
        if free <= 0:
            return 0
        now = self.now()
        tenants = await self.storage.webhook_tenants_due(now)
        if not tenants:
            return 0
        self._turn = (self._turn + 1) % len(tenants)
        tenants = tenants[self._turn :] + tenants[: self._turn]
        share = max(1, free // len(tenants))
        lease = self.settings.webhook_timeout + LEASE_MARGIN
        started = 0
        for tenant_id in tenants:
            if started >= free:
                break
            limit = min(share, free - started)
            for execution in await self.storage.claim_deliveries(tenant_id, now, lease, limit):
                task = asyncio.create_task(self._deliver_logged(execution))
                self.inflight.add(task)
                task.add_done_callback(self.inflight.discard)
                started += 1
        return started

    async def drain(self) -> None:
        """Wait for the deliveries in flight (tests; shutdown cancels instead)."""
        while self.inflight:
            await asyncio.gather(*self.inflight, return_exceptions=True)

    async def run_forever(self, interval: float) -> None:
        failures = 0
        while True:
            try:
                await self.pump()
                failures = 0
            except Exception:  # keep going; leases bring back anything half-started
                if failures % max(1, int(60 / interval)) == 0:
                    log.exception("webhook pass failed (%d in a row)", failures + 1)
                failures += 1
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        tasks = list(self.inflight)
        for task in tasks:
            task.cancel()  # its lease runs out and the delivery is made again later
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()

    async def _deliver_logged(self, execution: ExecutionRow) -> None:
        try:
            await self.deliver(execution)
        except Exception:  # the lease runs out and the sweep requeues it
            log.exception("webhook delivery of execution %s failed", execution.id)

    async def deliver(self, execution: ExecutionRow) -> None:
        """One attempt at `execution` (leased by `claim_deliveries`), then its record."""
        cue = await self.storage.get_cue(execution.tenant_id, execution.cue_id)
        if cue is None:
            await self._final(execution, None, "the cue was deleted before delivery")
            return
        callback = cue.callback or {}
        error: str | None = None
        result = ""
        status: int | None = None
        try:
            url = str(callback.get("url") or "")
            await self.guard.check(url)
            secret = await tenant_secret(self.storage, execution.tenant_id)
            body = canonical_body(delivery_body(execution, cue))
            headers = signed_headers(secret, body, self.now(), callback.get("headers"))
            headers["X-CueAPI-Cue-Id"] = cue.id
            headers["X-CueAPI-Execution-Id"] = execution.id
            headers["X-CueAPI-Scheduled-For"] = str(timestamps.render(execution.scheduled_for))
            headers["X-CueAPI-Attempt"] = str(execution.attempts)
            answer = await self.client.request(
                str(callback.get("method") or "POST").upper(),
                url,
                content=body,
                headers=headers,
                timeout=self.settings.webhook_timeout,
            )
            status = answer.status_code
            result = answer.text[:RESULT_CHARS]
            if not 200 <= status < 300:
                error = f"endpoint returned {status}"
        except UrlRefused as exc:
            error = f"refused: {exc}"
        except httpx.TimeoutException:
            error = f"timed out after {self.settings.webhook_timeout:g} s"
        except httpx.HTTPError as exc:
            error = f"could not reach the endpoint: {exc or type(exc).__name__}"
        now = self.now()
        detail: dict[str, Any] = {"last_attempt_at": timestamps.render(now)}
        if status is not None:
            detail["last_status"] = status
        if error is None:
            outcome = OutcomeRecord(success=True, result=result, recorded_at=now)
            if await self.storage.finish_delivery(
                execution.id, execution.attempts, outcome=outcome, retry_at=None, detail=detail
            ):
                await complete_once(self.storage, _closed(execution, "success"), now)
            return
        detail["last_error"] = error
        if execution.attempts < execution.max_attempts:
            wait = backoff_seconds(
                cue.retry, execution.attempts, self.settings.webhook_backoff_scale
            )
            detail["next_attempt_at"] = timestamps.render(now + wait)
            await self.storage.finish_delivery(
                execution.id, execution.attempts, outcome=None, retry_at=now + wait, detail=detail
            )
            return
        await self._final(execution, cue, error, detail)

    async def _final(
        self,
        execution: ExecutionRow,
        cue: CueRow | None,
        error: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        now = self.now()
        message = f"{error} (attempt {execution.attempts} of {execution.max_attempts})"
        outcome = OutcomeRecord(success=False, error=message, recorded_at=now)
        closed = await self.storage.finish_delivery(
            execution.id,
            execution.attempts,
            outcome=outcome,
            retry_at=None,
            detail=detail or {"last_error": error},
        )
        if not closed or cue is None:
            return
        await complete_once(self.storage, _closed(execution, "failed"), now)
        await self._escalate(cue, execution, message, now)

    async def _escalate(self, cue: CueRow, execution: ExecutionRow, error: str, now: float) -> None:
        """The cue's `on_failure`: a signed POST to `webhook`, and/or `pause`."""
        on_failure = cue.on_failure or {}
        if on_failure.get("pause"):
            await self.storage.update_cue(cue.tenant_id, cue.id, {"status": "paused"}, now)
        url = on_failure.get("webhook")
        if not url:
            return
        notice = {
            "event": "execution.failed",
            "execution_id": execution.id,
            "cue_id": cue.id,
            "name": cue.name,
            "scheduled_for": timestamps.render(execution.scheduled_for),
            "attempts": execution.attempts,
            "error": error,
            "paused": bool(on_failure.get("pause")),
        }
        try:  # one attempt, best effort: the failure itself is already recorded
            await self.guard.check(str(url))
            secret = await tenant_secret(self.storage, cue.tenant_id)
            body = canonical_body(notice)
            headers = signed_headers(secret, body, now)
            headers["X-CueAPI-Cue-Id"] = cue.id
            headers["X-CueAPI-Execution-Id"] = execution.id
            await self.client.post(
                str(url), content=body, headers=headers, timeout=self.settings.webhook_timeout
            )
        except (UrlRefused, httpx.HTTPError) as exc:
            log.warning("on_failure webhook of cue %s not delivered: %s", cue.id, exc)


def _closed(execution: ExecutionRow, status: str) -> ExecutionRow:
    execution.status = status
    return execution
