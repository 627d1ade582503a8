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
The hot paths stay cheap: a labelled child is looked up once per label set,
and storage timings are counted in plain lists (`Timings`) rendered as the
same histogram at scrape time.
"""

from __future__ import annotations

import inspect
import time
from bisect import bisect_left
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.metrics_core import HistogramMetricFamily, Metric
from prometheus_client.utils import floatToGoString
from starlette.requests import Request
from starlette.responses import Response

if TYPE_CHECKING:
    from cuemsg.server.state import Server
    from cuemsg.server.storage.base import Storage

#: Mailboxes reported by `cuemsg_waiting_executions` (those with the most waiting).
WAITING_TOP = 50

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Timings:
    """`cuemsg_storage_seconds`, the histogram of storage call latency by `op`.

    prometheus_client's `Histogram.observe` takes a lock for the sum and one for
    the bucket, and searches the buckets in Python: a few microseconds per
    storage call. Storage calls are timed on the event loop's thread only, so
    plain per-op lists suffice; a scrape renders them as the same family
    (`_bucket`, `_count`, `_sum`, `_created`).
    """

    name = "cuemsg_storage_seconds"

    def __init__(self, registry: CollectorRegistry, buckets: tuple[float, ...]) -> None:
        self.bounds = buckets
        # The `le` labels as prometheus_client writes them (Go's float format).
        self.les = [*(floatToGoString(b) for b in buckets), "+Inf"]  # type: ignore[no-untyped-call]
        #: op -> [calls per bucket (the last is +Inf)..., the sum of seconds]
        self.ops: dict[str, list[float]] = {}
        self.created: dict[str, float] = {}
        registry.register(self)

    def of(self, op: str) -> list[float]:
        """The counts of `op` (made on first use, as a labelled child is)."""
        counts = self.ops.get(op)
        if counts is None:
            counts = self.ops[op] = [0] * (len(self.bounds) + 1) + [0.0]
            self.created[op] = time.time()
        return counts

    def observe(self, counts: list[float], seconds: float) -> None:
        counts[bisect_left(self.bounds, seconds)] += 1  # the first bound >= seconds
        counts[-1] += seconds

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, "storage call latency", labels=["op"])
        for op, counts in list(self.ops.items()):
            buckets, total = [], 0.0
            for le, n in zip(self.les, counts[:-1], strict=True):
                total += n
                buckets.append((le, total))
            family.add_metric([op], buckets, counts[-1])
            family.add_sample(f"{self.name}_created", {"op": op}, self.created[op])
        yield family


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
        self.succeeded = self.outcomes.labels("success")
        self.failed = self.outcomes.labels("failure")
        self.sweeps = Counter(
            "cuemsg_sweeps", "what the sweeper did (lease_expired, missed)", ["what"], registry=r
        )
        self.storage = Timings(r, _BUCKETS)
        self.parked = Gauge("cuemsg_long_polls_parked", "claims waiting for work", registry=r)
        self.streams = Gauge("cuemsg_event_streams", "open event streams", registry=r)
        self.waiting = Gauge(
            "cuemsg_waiting_executions",
            f"claimable executions per mailbox (the {WAITING_TOP} with the most)",
            ["cue_id", "mailbox"],
            registry=r,
        )
        self._swept: dict[str, int] = {}
        self._handed = 0
        self._settled = [0, 0]

    def instrument(
        self, route: str, method: str, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """`endpoint`, counting its answers by route template, method and status."""

        by_status: dict[int, Any] = {}  # status -> its child: `labels()` once per status

        async def counted(request: Request) -> Response:
            response = await endpoint(request)
            status = response.status_code
            child = by_status.get(status)
            if child is None:
                child = by_status[status] = self.requests.labels(route, method, str(status))
            child.inc()
            return response

        return counted

    async def scrape(self, request: Request, server: Server) -> Response:
        """The scrape: refresh the gauges, then the text format."""
        self.parked.set(server.storage.notifier.waiting())
        handed = server.storage.notifier.handed  # claims made by fires for parked claims
        self.claims.inc(handed - self._handed)
        self._handed = handed
        failed, succeeded = server.storage.notifier.settled  # recorded with hand-overs
        self.failed.inc(failed - self._settled[0])
        self.succeeded.inc(succeeded - self._settled[1])
        self._settled = [failed, succeeded]
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
            (m.succeeded if outcome.success else m.failed).inc()


def _count_settle_and_claim(m: Metrics, result: Any) -> None:
    if result is None:  # nothing claimable, nothing recorded (`..._if_claimable`)
        return
    _count_outcome(m, result[0])
    _count_claims(m, result[1])


_COUNTED: dict[str, Callable[[Metrics, Any], None]] = {
    "fire": _count_fire,
    "claim": _count_claims,
    "claim_next": _count_claims,
    "record_outcome": _count_outcome,
    "record_outcomes": _count_outcome,
    "settle_and_claim": _count_settle_and_claim,
    "settle_and_claim_if_claimable": _count_settle_and_claim,
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
        metrics = self._metrics
        timings = metrics.storage
        counts = timings.of(name)
        count = _COUNTED.get(name)
        clock = time.perf_counter

        async def timed(*args: Any, **kwargs: Any) -> Any:
            start = clock()
            try:
                result = await value(*args, **kwargs)
            finally:
                timings.observe(counts, clock() - start)
            if count is not None:
                count(metrics, result)
            return result

        setattr(self, name, timed)  # made once per method
        return timed
