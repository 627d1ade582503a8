"""`GET /metrics`: the server's Prometheus metrics (`prometheus_client`).

What is measured, all with bounded label sets:

- `cuemsg_http_requests_total{route, method, status}`: route is the route's
  template (`/v1/executions/{execution_id}/claim`), never a raw path;
- `cuemsg_fires_total`, `cuemsg_claims_total`, `cuemsg_outcomes_total{kind}`
  (`success` / `failure`), `cuemsg_sweeps_total{what}` (`lease_expired`,
  `missed`), counted by this process;
- `cuemsg_storage_seconds{op}`: how long each storage call took;
- gauges read at scrape time: `cuemsg_long_polls_parked`,
  `cuemsg_event_streams`, and `cuemsg_waiting_executions{cue_id, mailbox}`
  for the `WAITING_TOP` mailboxes with the most waiting (the rest summed
  under `mailbox="(other)"` is not kept: a scrape stays small).

`MeteredStorage` wraps the backend to time and count its calls; the
registry is one per app, so several apps in one process never collide.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from cuemsg.server.state import Server
    from cuemsg.server.storage.base import Storage

#: Mailboxes reported by `cuemsg_waiting_executions` (those with the most waiting).
WAITING_TOP = 50

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The metrics of one app, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "cuemsg_http_requests",
            "HTTP requests answered",
            ["route", "method", "status"],
            registry=r,
        )
        self.fires = Counter("cuemsg_fires", "executions fired", registry=r)
        self.claims = Counter("cuemsg_claims", "executions claimed", registry=r)
        self.outcomes = Counter("cuemsg_outcomes", "outcomes recorded", ["kind"], registry=r)
        self.sweeps = Counter(
            "cuemsg_sweeps", "what the sweeper did (lease_expired, missed)", ["what"], registry=r
        )
        self.storage = Histogram(
            "cuemsg_storage_seconds", "storage call latency", ["op"], buckets=_BUCKETS, registry=r
        )
        self.parked = Gauge("cuemsg_long_polls_parked", "claims waiting for work", registry=r)
        self.streams = Gauge("cuemsg_event_streams", "open event streams", registry=r)
        self.waiting = Gauge(
            "cuemsg_waiting_executions",
            f"claimable executions per mailbox (the {WAITING_TOP} with the most)",
            ["cue_id", "mailbox"],
            registry=r,
        )
        self._swept: dict[str, int] = {}

    def instrument(
        self, route: str, method: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """`endpoint`, counting its answers by route template, method and status."""

        async def counted(request: Request) -> Response:
            response = await endpoint(request)
            self.requests.labels(route, method, str(response.status_code)).inc()
            return response

        return counted

    async def scrape(self, request: Request, server: Server) -> Response:
        """The scrape: refresh the gauges, then the text format."""
        self.parked.set(server.storage.notifier.waiting())
        self.streams.set(server.feed.streams)
        swept = server.storage.swept
        for what, total in swept.items():
            self.sweeps.labels(what).inc(total - self._swept.get(what, 0))
            self._swept[what] = total
        self.waiting.clear()
        for cue_id, name, count in await server.storage.waiting_by_cue(WAITING_TOP):
            self.waiting.labels(cue_id, name or "").set(count)
        return Response(generate_latest(self.registry), media_type=CONTENT_TYPE_LATEST)


# Storage calls whose answers are counted, and how.
def _count_fire(m: Metrics, result: Any) -> None:
    m.fires.inc(len(result))


def _count_claims(m: Metrics, result: Any) -> None:
    m.claims.inc(len(result) if isinstance(result, list) else 1)


def _count_outcome(m: Metrics, result: Any) -> None:
    for row in result if isinstance(result, list) else [result]:
        outcome = getattr(row, "outcome", None)  # an ApiProblem in a batch has none
        if outcome is not None:
            m.outcomes.labels("success" if outcome.success else "failure").inc()


def _count_settle_and_claim(m: Metrics, result: Any) -> None:
    _count_outcome(m, result[0])
    _count_claims(m, result[1])


_COUNTED: dict[str, Callable[[Metrics, Any], None]] = {
    "fire": _count_fire,
    "claim": _count_claims,
    "claim_next": _count_claims,
    "record_outcome": _count_outcome,
    "record_outcomes": _count_outcome,
    "settle_and_claim": _count_settle_and_claim,
}


class MeteredStorage:
    """A `Storage` whose calls are timed (`cuemsg_storage_seconds`) and whose
    fires, claims and outcomes are counted; everything else passes through."""

    def __init__(self, inner: Storage, metrics: Metrics) -> None:
        self._inner = inner
        self._metrics = metrics

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(value):
            return value
        histogram = self._metrics.storage.labels(name)
        count = _COUNTED.get(name)
        metrics = self._metrics

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                result = await value(*args, **kwargs)
            finally:
                histogram.observe(time.perf_counter() - start)
            if count is not None:
                count(metrics, result)
            return result

        setattr(self, name, timed)  # made once per method
        return timed
