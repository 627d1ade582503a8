"""The whole run: start each server, run its rows in order, compute the ratios.

A row that fails is kept in the table with the error in its note (and the
traceback on stderr), and the run goes on: one broken row must not hide
the others.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
import time
import traceback
from collections.abc import Callable, Collection
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import peers, rows, shapes
from bench.drivers import driver_label, mailbox_available
from bench.procs import (
    ServerProc,
    machine,
    postgres_problem,
    postgres_schema,
    servers,
    start_server,
    workdir,
)
from bench.report import Ratio, Report, Row
from bench.rows import Plan
from bench.tail import tail_rows

# The row keys (and cases) every run prints, even when one cannot run.
ROW_KEYS = [
    "1a", "1b", "1c", "1d", "2a", "2b", "2c", "2d", "2e", "2f", "2i", "2g", "2h", "2j", "2k",
    "3a", "3b", "4", "4g", "5a", "5b", "5c", "6", "7a", "7b", "7c", "7d", "8a", "8b", "9a", "9b",
    "B", "Bm", "10a", "10b", "10c", "10d", "10e", "10f", "H",
]  # fmt: skip
#: Rows on the SQLite servers (`Suite.sqlite`), not the tail's, PostgreSQL's or the peers'.
SQLITE_ROWS = [k for k in ROW_KEYS if k not in ("2j", "2k") and not k.startswith(("7", "8", "10"))]


class Suite:
    """Runs the rows of one plan and collects them into a `Report`."""

    def __init__(
        self, plan: Plan, log: Callable[[str], None], only: Collection[str] | None = None
    ) -> None:
        self.plan = plan
        #: run only these row keys ("2j" brings 2k, "2a" the floor 1a it is read against)
        self.only = set(only) if only else None
        self.log = log
        self.kind = "mailbox"
        self.report = Report(
            mode="quick" if plan.quick else "full",
            date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            machine=machine(),
        )
        self.receivers: list[dict[str, Any]] = []

    def sample_load(self) -> None:
        """Note the machine's 1-minute load average (other work competes for the CPU)."""
        with contextlib.suppress(OSError, AttributeError):
            self.report.load.append(round(os.getloadavg()[0], 2))

    def add(self, key: str, case: str, make: Callable[[], Row | list[Row]]) -> None:
        """Run one row; on failure keep a row that says so."""
        if not self.wants(key):
            return
        self.sample_load()
        started = time.monotonic()
        try:
            made = make()
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            made = Row(key, case, note=f"failed: {type(exc).__name__}: {str(exc)[:200]}")
        for row in made if isinstance(made, list) else [made]:
            self.report.rows.append(row)
            self.log(f"  {row.key:>3} {row.case[:70]:<70} {time.monotonic() - started:5.1f} s")

    def wants(self, *keys: str) -> bool:
        return self.only is None or any(k in self.only for k in keys)

    def skip(self, keys_cases: list[tuple[str, str]], why: str) -> None:
        for key, case in keys_cases:
            self.report.rows.append(Row(key, case, note=f"skipped: {why}"))
            self.log(f"  {key:>3} skipped: {why}")

    # -- sections -----------------------------------------------------------------------

    def sqlite(self, wd: Path) -> None:
        """Rows 1-6, 9 and B: one SQLite server with the extensions, one without."""
        p, k = self.plan, self.kind
        self.log("SQLite: one server with the extensions, one --no-extensions (plain contract)")
        with servers(
            lambda: start_server(str(wd / "ext.db"), label="sqlite", workdir=wd),
            lambda: start_server(str(wd / "plain.db"), label="plain", extensions=False, workdir=wd),
        ) as [s, pl]:
            self.add("1a", "HTTP floor, 1 client", lambda: rows.floor(p, s, key="1a"))
            self.add("1b", "HTTP floor, 8 clients", lambda: rows.floor(p, s, key="1b", clients=8))
            self.add("1c", "HTTP floor, paced", lambda: rows.floor(p, s, key="1c", paced=True))
            self.add(
                "1d", "HTTP floor, http.client", lambda: rows.floor(p, s, key="1d", stdlib=True)
            )
            self.add("2a", "one-way cycle", lambda: rows.cycle(p, s, key="2a", kind=k))
            self.add(
                "2e",
                "one-way cycle, AsyncMailbox",
                lambda: shapes.async_cycle(s, key="2e", count=p.cycles, deadline=p.deadline),
            )
            self.add(
                "2f", "one-way, timed", lambda: shapes.timed(s, key="2f", seconds=p.timed_seconds)
            )
            self.add(
                "2i",
                "one-way, timed, receive(batch=50)",
                lambda: shapes.timed(
                    s, key="2i", seconds=p.timed_seconds, batch=50, label=", receive(batch=50)"
                ),
            )
            self.one_way_rounds(s, pl)
            self.add("B", "batched one-way", lambda: rows.batch(p, s, key="B"))
            self.add("Bm", "Mailbox send_many", lambda: rows.batch_mailbox(p, s, key="Bm"))
            self.add("4", "RPC", lambda: rows.rpc(p, s, key="4", kind=k))
            self.add("4g", "gather of 50", lambda: rows.gather(p, s, key="4g"))
            self.add(
                "5a",
                "fire-to-handler, long-poll",
                lambda: rows.fire_to_handler(p, s, key="5a", kind=k, poll=None, extensions=True),
            )
            self.add(
                "5b",
                "fire-to-handler, polling",
                lambda: rows.fire_to_handler(
                    p, pl, key="5b", kind="raw", poll=1.0, extensions=False
                ),
            )
            self.add(
                "5c",
                "fire-to-handler, plain contract, client backoff",
                lambda: rows.fire_to_handler(
                    p, pl, key="5c", kind=k, poll=None, extensions=False, paced=True
                ),
            )
            self.add("6", "idle receiver", lambda: rows.idle(p, s, key="6", kind=k))
            self.add("9", "memory", lambda: rows.memory(s, self.receivers, "9"))
        self.sqlite_full(wd)
        self.add("H", "database size, long one-way run", lambda: rows.db_size(p, wd, key="H"))

    def sqlite_full(self, wd: Path) -> None:
        """Rows 2g-2h: 2a and 2f on a server with `synchronous=FULL` (an fsync per commit)."""
        p = self.plan
        self.log("SQLite with synchronous=FULL")
        full = {"CUEMSG_SQLITE_SYNCHRONOUS": "FULL"}
        with servers(
            lambda: start_server(str(wd / "full.db"), label="full", workdir=wd, env=full)
        ) as [f]:

            def cycle() -> Row:
                row = rows.cycle(p, f, key="2g", kind=self.kind)
                row.case += ", synchronous=FULL"
                return row

            self.add("2g", "one-way cycle, FULL", cycle)
            self.add(
                "2h",
                "one-way, timed, FULL",
                lambda: shapes.timed(
                    f, key="2h", seconds=p.timed_seconds, label=", synchronous=FULL"
                ),
            )

    def one_way_rounds(self, s: ServerProc, pl: ServerProc) -> None:
        """Rows 2b-2d, 3a-3b: each case run `plan.rounds` times, interleaved.

        Interleaving spreads a passing burst of load (other processes on the
        machine) over all cases instead of one, so their ratios hold better.
        """
        k, p = self.kind, self.plan
        cases: list[tuple[str, str, list[ServerProc], int, str, bool]] = [
            ("2b", "one-way send -> receive -> ack, 1 pair", [s], 1, k, False),
            ("2c", "one-way send -> receive -> ack, 8 concurrent pairs", [s], 8, k, False),
            ("2d", "one-way send -> receive -> ack, 1 pair, raw client", [s], 1, "raw", False),
            ("3a", "one-way, 1 pair, plain contract (list + claim by id)", [pl], 1, k, True),
            ("3b", "one-way, 8 concurrent pairs, plain contract (list + claim)", [pl], 8, k, True),
        ]
        if not mailbox_available() and self.wants("2d"):
            cases = [c for c in cases if c[0] != "2d"]
            self.report.rows.append(
                Row(
                    "2d",
                    cases[0][1] + ", raw client",
                    note="same as 2b: the Mailbox has not landed",
                )
            )
        cases = [c for c in cases if self.wants(c[0])]
        runs: dict[str, list[rows.OneWayRun]] = {c[0]: [] for c in cases}
        errors: dict[str, str] = {}
        for round_ in range(p.rounds):
            for key, case, srvs, pairs, kind, plain in cases:
                if key in errors:
                    continue
                per_pair = p.one_pair if pairs == 1 else p.per_pair
                if plain:  # the plain path costs more a message: keep its runs about as long
                    per_pair = max(10, per_pair * 2 // 3)
                self.sample_load()
                started = time.monotonic()
                try:
                    run = rows.one_way_run(
                        p, srvs, pairs=pairs, per_pair=per_pair, kind=kind,
                        extensions=not plain, prefix=f"ow-{key}",
                    )  # fmt: skip
                except Exception as exc:
                    traceback.print_exc(file=sys.stderr)
                    errors[key] = f"failed: {type(exc).__name__}: {str(exc)[:200]}"
                    continue
                runs[key].append(run)
                self.log(
                    f"  {key:>3} round {round_ + 1}/{p.rounds} {case[:52]:<52}"
                    f" {run.rate:7.1f} msg/s {time.monotonic() - started:5.1f} s"
                )
        for key, case, _srvs, _pairs, kind, plain in cases:
            if key in errors or not runs[key]:
                self.report.rows.append(Row(key, case, note=errors.get(key, "failed: no run")))
                continue
            self.report.rows.append(
                rows.one_way_row(key, case, runs[key], driver_label(kind, not plain))
            )
        if runs.get("2c"):
            self.receivers = [r for run in runs["2c"] for r in run.receivers]

    def postgres(self, wd: Path) -> None:
        """Rows 7a-7d: one-way on PostgreSQL, one replica, then two on one database."""
        cases = [
            ("7a", "PostgreSQL, 1 replica, one-way 1 pair"),
            ("7b", "PostgreSQL, 1 replica, one-way 8 pairs"),
            ("7c", "PostgreSQL, 2 replicas, one-way 1 pair (across replicas)"),
            ("7d", "PostgreSQL, 2 replicas, one-way 8 pairs (across replicas)"),
        ]
        problem = postgres_problem()
        if problem:
            self.skip(cases, problem)
            return
        self.postgres_replicas(wd, 1, cases[0:2])
        self.postgres_replicas(wd, 2, cases[2:4])

    def postgres_replicas(self, wd: Path, replicas: int, cases: list[tuple[str, str]]) -> None:
        """`replicas` servers on a fresh schema: a 1-pair and an 8-pair one-way row."""
        self.log(f"PostgreSQL, {replicas} replica(s) on one database")
        (k1, c1), (k8, c8) = cases
        try:
            with postgres_schema() as url:
                first = start_server(url, label="pg1", workdir=wd)
                starts: list[Callable[[], ServerProc]] = [lambda: first]
                if replicas == 2:
                    starts.append(
                        lambda: start_server(url, label="pg2", workdir=wd, key=first.api_key)
                    )
                with servers(*starts) as srvs:
                    self.add(k1, c1, lambda: self.one_way(srvs, k1, c1, 1, f"pg{replicas}-1"))
                    self.add(k8, c8, lambda: self.one_way(srvs, k8, c8, 8, f"pg{replicas}-8"))
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            done = {r.key for r in self.report.rows}
            todo = [(k, c) for k, c in cases if k not in done]
            self.skip(todo, f"failed: {type(exc).__name__}: {str(exc)[:200]}")

    def tail(self, wd: Path) -> None:
        """Rows 2j and 2k: one-way with and without a `cuemsg tail` attached."""
        self.log("SQLite: one-way with and without a tail attached")
        with servers(lambda: start_server(str(wd / "tail.db"), label="tail", workdir=wd)) as [s]:
            self.add("2j", "one-way vs tail", lambda: tail_rows(self.plan, s, self.kind, self.log))

    def peers(self) -> None:
        self.log("reference peers")
        p = self.plan
        self.add("8a", "NATS", lambda: peers.nats_row("8a", p.peer_calls, p.deadline))
        self.add("8b", "Redis", lambda: peers.redis_row("8b", p.peer_calls, p.deadline))
        shapes_ = [
            ("cycle", p.peer_calls, p.deadline),
            ("timed", shapes.UNBOUNDED, p.timed_seconds),
            ("batch", p.batch_msgs, p.deadline),
        ]
        keys = iter(["10a", "10b", "10c", "10d", "10e", "10f"])
        for shape, count, seconds in shapes_:
            for broker in ("jetstream", "rabbitmq"):
                key = next(keys)
                self.add(
                    key,
                    f"{broker} {shape}",
                    functools.partial(
                        peers.durable_row, key, broker, shape, count=count, seconds=seconds
                    ),
                )

    def one_way(self, srvs: list[ServerProc], key: str, case: str, pairs: int, prefix: str) -> Row:
        """One run of a one-way case (the PostgreSQL rows)."""
        p = self.plan
        per_pair = p.one_pair if pairs == 1 else p.per_pair
        run = rows.one_way_run(
            p, srvs, pairs=pairs, per_pair=per_pair, kind=self.kind, prefix=prefix
        )
        return rows.one_way_row(key, case, [run], driver_label(self.kind))

    # -- the run ------------------------------------------------------------------------

    def run(self) -> Report:
        self.sample_load()
        started = time.monotonic()
        with workdir() as wd:
            if self.wants(*SQLITE_ROWS):
                self.sqlite(wd)
            if self.wants("2j"):
                self.tail(wd)
            if self.wants("7a", "7b", "7c", "7d"):
                self.postgres(wd)
        self.peers()
        self.sample_load()
        self.report.rows.sort(key=lambda r: ROW_KEYS.index(r.key) if r.key in ROW_KEYS else 99)
        self.report.ratios = ratios(self.report)
        self.report.duration = time.monotonic() - started
        return self.report


def _get(report: Report, key: str, attr: str) -> float | None:
    row = report.row(key)
    value = getattr(row, attr) if row is not None else None
    return float(value) if value is not None else None


def _extra(report: Report, key: str, name: str, minus: str | None = None) -> float | None:
    """A number the row keeps in `extra` (less another one, with `minus`)."""
    row = report.row(key)
    if row is None or name not in row.extra:
        return None
    value = float(row.extra[name])
    return value - float(row.extra.get(minus, 0)) if minus else value


def _div(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def ratios(report: Report) -> list[Ratio]:
    """The targets (with limits) and the informative ratios, from this run's rows."""
    found = _ratios(report)
    for r in found:
        r.sources = tuple(re.findall(r"\((\w+)\)", r.definition))
    return found


def _ratios(report: Report) -> list[Ratio]:
    g = lambda key, attr: _get(report, key, attr)  # noqa: E731
    floor_p50 = g("1a", "p50")
    idle = report.row("6")
    per_wait = None
    if idle is not None and idle.extra.get("periods"):
        per_wait = idle.extra["requests"] / idle.extra["periods"]
    return [
        Ratio(
            "T1", "one-way message cost vs 3 floor requests",
            "p50 of one send -> receive -> ack cycle (2a) / (3 x floor p50 (1a))",
            _div(g("2a", "p50"), 3 * floor_p50 if floor_p50 else None), 1.5,
        ),
        Ratio(
            "T2", "fire-to-handler vs floor round trips",
            "fire-to-handler p50 with long-poll (5a) / paced floor p50 (1c)",
            _div(g("5a", "p50"), g("1c", "p50")), 2.0,
            note="the floor paced as the sender is: both wake from idle each time",
        ),
        Ratio(
            "R0", "fire-to-handler vs back-to-back floor",
            "fire-to-handler p50 with long-poll (5a) / floor p50 (1a)",
            _div(g("5a", "p50"), floor_p50),
        ),
        Ratio(
            "T3", "idle receiver: requests per wait period",
            "server requests during the idle run / wait periods elapsed (6)",
            per_wait, 1.5, note="goal: about 1",
        ),
        Ratio(
            "T10", "one-way slowdown with a tail attached",
            "one-way rate without a tail (2j) / with `cuemsg tail` attached (2k)",
            _div(g("2j", "value"), g("2k", "value")), 1.11,
            note="goal: under 10 % slower",
        ),
        Ratio(
            "T4", "HTTP requests per one-way message",
            "server requests / messages, 1 pair with the extensions (2b)",
            g("2b", "req_per_msg"), 3.0,
        ),
        Ratio(
            "R11", "client vs server CPU per one-way message",
            "client CPU / server CPU per message, 1 pair (2b)",
            _div(g("2b", "client_cpu"), g("2b", "server_cpu")),
            note="above 1: the client's CPU, not the server's, caps a message",
        ),
        Ratio(
            "R12", "CueClient vs bare http.client per request (client CPU)",
            "client CPU per GET with CueClient (1a) / with http.client (1d)",
            _div(g("1a", "client_cpu"), g("1d", "client_cpu")),
        ),
        Ratio(
            "R1", "what the extensions buy, 1 pair",
            "msg/s with extensions (2b) / msg/s plain contract (3a)",
            _div(g("2b", "value"), g("3a", "value")),
        ),
        Ratio(
            "R2", "what the extensions buy, 8 pairs",
            "msg/s with extensions (2c) / msg/s plain contract (3b)",
            _div(g("2c", "value"), g("3b", "value")),
        ),
        Ratio(
            "R3", "what batching buys",
            "msg/s batched (B) / msg/s one at a time (2b)",
            _div(g("B", "value"), g("2b", "value")),
        ),
        Ratio(
            "R3m", "what the Mailbox's batch path buys",
            "msg/s Mailbox.send_many -> receive(batch) (Bm) / msg/s one at a time (2b)",
            _div(g("Bm", "value"), g("2b", "value")),
            note="send_many batches the fires, receive(batch=n) the claims and acks",
        ),
        Ratio(
            "R4", "8 pairs vs the server's floor",
            "msg/s, 8 pairs (2c) x req/msg (2c) / floor req/s, 8 clients (1b)",
            _div(
                (g("2c", "value") or 0) * (g("2c", "req_per_msg") or 0) or None, g("1b", "value")
            ),
            note="share of the floor's request rate the message path reaches",
        ),
        Ratio(
            "R5", "polling vs long-poll latency",
            "fire-to-handler p50 polling 1 s (5b) / long-poll (5a)",
            _div(g("5b", "p50"), g("5a", "p50")),
        ),
        Ratio(
            "R6", "Mailbox overhead over the raw client",
            "msg/s raw client (2d) / msg/s Mailbox (2b), 1 pair",
            _div(g("2d", "value"), g("2b", "value")),
        ),
        Ratio(
            "R7", "two PostgreSQL replicas vs one, 8 pairs",
            "msg/s 2 replicas (7d) / 1 replica (7b)",
            _div(g("7d", "value"), g("7b", "value")),
        ),
        Ratio(
            "R8", "PostgreSQL vs SQLite, 8 pairs",
            "msg/s PostgreSQL 1 replica (7b) / SQLite (2c)",
            _div(g("7b", "value"), g("2c", "value")),
        ),
        Ratio(
            "T5", "HTTP requests per RPC call",
            "server requests, first call to last answer / calls, request -> serve -> reply (4)",
            g("4", "req_per_msg"), 4.0,
        ),
        Ratio(
            "T6", "cuemsg RPC vs NATS round trip",
            "RPC p50 (4) / NATS request/reply p50 (8a)",
            _div(g("4", "p50"), g("8a", "p50")), 6.0,
        ),
        Ratio(
            "T9", "AsyncMailbox vs Mailbox client CPU per message",
            "client CPU per cycle with AsyncMailbox (2e) / with Mailbox (2a)",
            _div(g("2e", "client_cpu"), g("2a", "client_cpu")), 1.2,
        ),
        Ratio(
            "P1j", "one at a time: JetStream vs cuemsg",
            "msg/s JetStream (10a) / msg/s Mailbox cycle (2a)",
            _div(g("10a", "value"), g("2a", "value")), 2.0,
            note="goal: at least half of JetStream's rate",
        ),
        Ratio(
            "P1r", "one at a time: RabbitMQ vs cuemsg",
            "msg/s RabbitMQ (10b) / msg/s Mailbox cycle (2a)",
            _div(g("10b", "value"), g("2a", "value")), 1.0,
            note="goal: ahead of RabbitMQ",
        ),
        Ratio(
            "P2j", "separate processes: JetStream vs cuemsg, consumed",
            "consumed msg/s JetStream (10c) / Mailbox (2f)",
            _div(g("10c", "value"), g("2f", "value")), 2.0,
        ),
        Ratio(
            "P2r", "separate processes: RabbitMQ vs cuemsg, consumed",
            "consumed msg/s RabbitMQ (10d) / Mailbox (2f)",
            _div(g("10d", "value"), g("2f", "value")), 1.0,
        ),
        Ratio(
            "P2k", "separate processes: does the receiver keep up",
            "messages sent / messages consumed in the same time (2f)",
            _div(_extra(report, "2f", "sent"), _extra(report, "2f", "sent", "backlog")), 1.05,
            note="1.0: no backlog left when both stop",
        ),
        Ratio(
            "P2b", "separate processes, receive(batch=50): RabbitMQ vs cuemsg, consumed",
            "consumed msg/s RabbitMQ (10d) / Mailbox with receive(batch=50) (2i)",
            _div(g("10d", "value"), g("2i", "value")),
            note="what claiming a backlog 50 at a time buys (not the default: see the text)",
        ),
        Ratio(
            "P2bk", "separate processes, receive(batch=50): does the receiver keep up",
            "messages sent / messages consumed in the same time (2i)",
            _div(_extra(report, "2i", "sent"), _extra(report, "2i", "sent", "backlog")),
        ),
        Ratio(
            "P3j", "batches of 50: JetStream vs cuemsg",
            "msg/s JetStream (10e) / Mailbox send_many -> receive(batch) (Bm)",
            _div(g("10e", "value"), g("Bm", "value")), 2.0,
        ),
        Ratio(
            "P3r", "batches of 50: RabbitMQ vs cuemsg",
            "msg/s RabbitMQ (10f) / Mailbox send_many -> receive(batch) (Bm)",
            _div(g("10f", "value"), g("Bm", "value")), 1.0,
        ),
        Ratio(
            "P4", "server CPU per message, one at a time: cuemsg vs RabbitMQ",
            "server CPU per message, Mailbox cycle (2a) / RabbitMQ cycle (10b)",
            _div(g("2a", "server_cpu"), g("10b", "server_cpu")), 1.0,
        ),
        Ratio(
            "R13", "what synchronous=FULL costs, one at a time",
            "msg/s with NORMAL (2a) / with FULL (2g)",
            _div(g("2a", "value"), g("2g", "value")),
        ),
        Ratio(
            "R10", "cuemsg RPC vs Redis lists round trip",
            "RPC p50 (4) / Redis LPUSH/BRPOP p50 (8b)",
            _div(g("4", "p50"), g("8b", "p50")),
        ),
    ]  # fmt: skip
