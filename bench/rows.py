"""The rows of the table: each starts the roles it needs and turns their results into `Row`s.

Request counts come from the servers' `/health` counter, and server CPU from
the server processes' CPU times, both read once when every role is ready and
once when all have finished; rows run one after another, so nothing else
talks to a server in between. Client CPU is what the role processes used
after the start signal.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import roles
from bench.drivers import body, driver_label, ensure_cue, mailbox_available
from bench.procs import Role, ServerProc, run_roles, start_server
from bench.report import Row, percentile

#: Pauses of the paced floor and of the long-poll fire-to-handler sender (seconds).
PACED_GAP = (0.02, 0.08)
#: Pauses of the sender when the receiver polls: fires land at random phases.
SLOW_GAP = (0.3, 1.3)


@dataclass(frozen=True)
class Plan:
    """How much each row does: the full run (~5 min) or `--quick` (~1 min)."""

    quick: bool
    floor_seconds: float
    rounds: int  # interleaved runs of each one-way case (the row shows their median)
    one_pair: int  # messages, one pair, per round
    per_pair: int  # messages per pair, 8 pairs, per round
    cycles: int
    rpc_calls: int
    f2h_long_poll: int
    f2h_polling: int
    idle_wait: float
    idle_seconds: float
    batch_msgs: int
    batch_size: int
    peer_calls: int
    deadline: float  # seconds any one role may run
    timed_seconds: float  # the sender/receiver processes' run in the brokers' timed shape

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 1.0, 1, 100, 20, 40, 40, 15, 4, 2.0, 6.0, 600, 50, 200, 30.0, 2.0)
        return cls(False, 3.0, 3, 250, 50, 300, 300, 60, 16, 10.0, 40.0, 4000, 50, 2000, 60.0, 10.0)


class Counter:
    """Requests the given servers answered, and CPU they used, between `start()` and `stop()`."""

    def __init__(self, servers: list[ServerProc]) -> None:
        self.servers = servers
        self.before = 0
        self.count = 0
        self.cpu_before = 0.0
        self.cpu = 0.0

    def start(self) -> None:
        self.before = sum(s.requests() for s in self.servers)
        self.cpu_before = sum(s.cpu_seconds() for s in self.servers)

    def stop(self) -> int:
        self.cpu = sum(s.cpu_seconds() for s in self.servers) - self.cpu_before
        # each `requests()` call made after start() is one request more on its server
        self.count = sum(s.requests() for s in self.servers) - self.before - len(self.servers)
        return self.count


def measured(
    server_list: list[ServerProc], role_list: list[Role], timeout: float, **kw: Any
) -> tuple[list[dict[str, Any]], Counter]:
    """Run roles against servers, counting the servers' requests and CPU around them."""
    counter = Counter(server_list)
    results = run_roles(
        role_list, timeout=timeout, before_go=counter.start, samplers=server_list, **kw
    )
    counter.stop()
    return results, counter


def with_cpu(row: Row, counter: Counter, results: list[dict[str, Any]], n: int) -> Row:
    """Fill the row's server and client CPU per unit (`n` units)."""
    if n:
        row.server_cpu = counter.cpu / n
        row.client_cpu = sum(r.get("cpu", 0.0) for r in results) / n
    return row


def open_inboxes(kind: str, server: ServerProc, names: list[str], extensions: bool) -> list[str]:
    """Open (create) the named inboxes from the parent, through one client; their addresses."""
    from cuemsg.cueapi import CueClient

    with CueClient(server.api_key, server.base_url, use_extensions=extensions) as client:
        if kind == "mailbox" and mailbox_available():
            from cuemsg.mailbox import Mailbox

            out = []
            for name in names:
                with Mailbox.open(client, name) as mailbox:
                    out.append(mailbox.address)
            return out
        return [ensure_cue(client, name) for name in names]


def rate(n: int, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


# -- 1: the HTTP floor --------------------------------------------------------------------


def floor(
    plan: Plan,
    server: ServerProc,
    *,
    key: str,
    clients: int = 1,
    paced: bool = False,
    stdlib: bool = False,
) -> Row:
    """`GET /v1/cues/{id}` from `clients` processes, each one request at a time.

    `paced`: a random pause (as the long-poll fire-to-handler sender makes)
    before each request, so the server and client wake from idle each time.
    `stdlib`: with bare `http.client` instead of `CueClient` (what the HTTP stack costs).
    """
    cue_id = open_inboxes("raw", server, ["bench-floor"], True)[0]
    kw = dict(
        base_url=server.base_url,
        api_key=server.api_key,
        cue_id=cue_id,
        duration=plan.floor_seconds * (2 if paced else 1),
        gap=PACED_GAP if paced else None,
        stdlib=stdlib,
    )
    results, counter = measured(
        [server], [Role(roles.floor, kw) for _ in range(clients)], plan.floor_seconds * 2 + 30
    )
    lat = [x for r in results for x in r["latencies"]]
    elapsed = max(r["elapsed"] for r in results)
    who = "1 client process" if clients == 1 else f"{clients} client processes"
    how = f"{who}, " + ("20-80 ms apart" if paced else "back to back")
    row = Row(
        key,
        f"HTTP floor: GET /v1/cues/{{id}}, {how}",
        len(lat) if paced else rate(len(lat), elapsed),
        "samples" if paced else "req/s",
        percentile(lat, 50),
        percentile(lat, 99),
        1.0,
        "stdlib http.client, keep-alive" if stdlib else "CueClient.cues.get, keep-alive",
    )
    return with_cpu(row, counter, results, len(lat))


# -- 2, 3, 7: one-way messages ------------------------------------------------------------


@dataclass
class OneWayRun:
    """One measured run of `one_way_run`."""

    expected: int
    got: int
    span: float  # first send to last ack, seconds
    latencies: list[float]  # send -> handler, seconds
    requests: int
    server_cpu: float
    client_cpu: float
    receivers: list[dict[str, Any]]

    @property
    def rate(self) -> float:
        return self.got / self.span if self.span > 0 else 0.0


def one_way_run(
    plan: Plan,
    servers: list[ServerProc],
    *,
    pairs: int,
    per_pair: int,
    kind: str,
    extensions: bool = True,
    prefix: str,
) -> OneWayRun:
    """`pairs` sender/receiver processes, each pair on its own inbox; send -> receive -> ack.

    With several servers (replicas) pair i sends through server i and receives
    through the next one, so every message crosses replicas.
    """
    n = len(servers)
    names = [f"{prefix}-in-{i}" for i in range(pairs)]
    inboxes = open_inboxes(kind, servers[0], names, extensions)
    role_list: list[Role] = []
    for i in range(pairs):
        send_srv, recv_srv = servers[i % n], servers[(i + 1) % n]
        common = dict(kind=kind, count=per_pair, deadline=plan.deadline, extensions=extensions)
        role_list.append(
            Role(
                roles.receiver,
                dict(base_url=recv_srv.base_url, api_key=recv_srv.api_key, name=names[i], **common),
            )
        )
        role_list.append(
            Role(
                roles.sender,
                dict(
                    base_url=send_srv.base_url,
                    api_key=send_srv.api_key,
                    name=f"{prefix}-out-{i}",
                    to=inboxes[i],
                    **common,
                ),
            )
        )
    results, counter = measured(servers, role_list, plan.deadline + 30)
    receivers, senders = results[0::2], results[1::2]
    return OneWayRun(
        expected=pairs * per_pair,
        got=sum(r["received"] for r in receivers),
        span=max(r["t_last"] for r in receivers) - min(r["t_start"] for r in senders),
        latencies=[x for r in receivers for x in r["latencies"]],
        requests=counter.count,
        server_cpu=counter.cpu,
        client_cpu=sum(r.get("cpu", 0.0) for r in results),
        receivers=receivers,
    )


def one_way_row(key: str, case: str, runs: list[OneWayRun], label: str) -> Row:
    """A row from interleaved runs: the median rate; latencies, requests and CPU pooled."""
    got = sum(r.got for r in runs)
    rates = sorted(r.rate for r in runs)
    lat = [x for r in runs for x in r.latencies]
    note = label
    if len(runs) > 1:
        note += f"; median of {len(runs)} runs ({rates[0]:.0f}-{rates[-1]:.0f} msg/s)"
    expected = sum(r.expected for r in runs)
    if got < expected:
        note += f"; only {got}/{expected} arrived before the deadline"
    return Row(
        key,
        case,
        statistics.median(rates) if rates else None,
        "msg/s",
        percentile(lat, 50),
        percentile(lat, 99),
        sum(r.requests for r in runs) / got if got else None,
        note,
        server_cpu=sum(r.server_cpu for r in runs) / got if got else None,
        client_cpu=sum(r.client_cpu for r in runs) / got if got else None,
        extra={"requests": sum(r.requests for r in runs), "messages": got, "rates": rates},
    )


def cycle(plan: Plan, server: ServerProc, *, key: str, kind: str) -> Row:
    """One client: send to itself, receive, ack, one message at a time."""
    role = Role(
        roles.cycle,
        dict(
            kind=kind,
            base_url=server.base_url,
            api_key=server.api_key,
            name="bench-cycle",
            count=plan.cycles,
            deadline=plan.deadline,
        ),
    )
    results, counter = measured([server], [role], plan.deadline + 30)
    lat = results[0]["latencies"]
    row = Row(
        key,
        "one-way cycle: 1 client, send -> receive -> ack, one at a time",
        rate(len(lat), results[0]["elapsed"]),
        "msg/s",
        percentile(lat, 50),
        percentile(lat, 99),
        counter.count / len(lat) if lat else None,
        driver_label(kind),
    )
    return with_cpu(row, counter, results, len(lat))


# -- 4: RPC -------------------------------------------------------------------------------


def rpc(plan: Plan, server: ServerProc, *, key: str, kind: str) -> Row:
    """One requester, one responder: `request` against `serve`, one call at a time."""
    [svc] = open_inboxes(kind, server, ["bench-svc"], True)
    common = dict(kind=kind, base_url=server.base_url, api_key=server.api_key)
    role_list = [
        Role(roles.responder, dict(name="bench-svc", **common)),
        Role(
            roles.requester,
            dict(
                name="bench-caller", to=svc, count=plan.rpc_calls, deadline=plan.deadline, **common
            ),
        ),
    ]
    results, counter = measured([server], role_list, plan.deadline + 30, stop_after=[1])
    lat = results[1]["latencies"]
    # Requests of the calls, counted by the requester from its first call to the last
    # answer: what the two mailboxes send while they close (the last reply acks, the
    # responder's idle polls until it is told to stop) is teardown, not a call's.
    calls = results[1]["requests"]
    row = Row(
        key,
        "RPC: request -> serve -> reply, 1 caller, 1 responder (long-poll)",
        rate(len(lat), results[1]["elapsed"]),
        "call/s",
        percentile(lat, 50),
        percentile(lat, 99),
        calls / len(lat) if lat else None,
        driver_label(kind) + "; requests counted from the first call to the last answer",
    )
    return with_cpu(row, counter, results, len(lat))


def gather(plan: Plan, server: ServerProc, *, key: str, recipients: int = 50) -> Row:
    """`gather` to 50 mailboxes (one responder serves them all: they share a task)."""
    case = f"ask many: gather to {recipients} mailboxes, 1 responder (reply stream)"
    from cuemsg.cueapi import CueClient
    from cuemsg.mailbox import Mailbox

    if not hasattr(Mailbox, "gather"):
        return Row(key, case, note="this cuemsg has no Mailbox.gather")
    names = [f"bench-g{i:02}" for i in range(recipients)]
    gathers = 3 if plan.quick else 10  # each is 50 round trips through one responder
    with CueClient(server.api_key, server.base_url) as client:
        to = []
        for name in names:
            with Mailbox.open(client, name, task="bench-gsvc") as mailbox:
                to.append(mailbox.address)
    common = dict(base_url=server.base_url, api_key=server.api_key)
    role_list = [
        Role(roles.responder, dict(kind="mailbox", name=names[0], **common)),
        Role(
            roles.gatherer,
            dict(name="bench-gatherer", to=to, count=gathers, deadline=plan.deadline, **common),
        ),
    ]
    results, counter = measured([server], role_list, plan.deadline + 60, stop_after=[1])
    lat = results[1]["latencies"]
    row = Row(
        key,
        case,
        rate(len(lat), results[1]["elapsed"]),
        "gather/s",
        percentile(lat, 50),
        percentile(lat, 99),
        counter.count / len(lat) if lat else None,
        f"server requests per gather of {recipients}, the responder's 3 per request "
        f"included (all answer; {results[1]['short']} fell short)",
    )
    return with_cpu(row, counter, results, len(lat))


# -- 5: fire-to-handler latency -----------------------------------------------------------


def fire_to_handler(
    plan: Plan,
    server: ServerProc,
    *,
    key: str,
    kind: str,
    poll: float | None,
    extensions: bool,
    paced: bool = False,
) -> Row:
    """A receiver waits (long-poll, or polls every `poll` s); a sender fires now and then.

    On a polling receiver (or `paced`) the sender pauses 0.3-1.3 s between fires,
    so fires land at random phases of the polling; else 20-80 ms.
    """
    slow = poll is not None or paced
    count = plan.f2h_polling if slow else plan.f2h_long_poll
    [inbox] = open_inboxes(kind, server, ["bench-f2h"], extensions)
    common = dict(
        kind=kind,
        base_url=server.base_url,
        api_key=server.api_key,
        count=count,
        deadline=plan.deadline,
        extensions=extensions,
    )
    role_list = [
        Role(roles.handler_receiver, dict(name="bench-f2h", poll=poll, **common)),
        Role(
            roles.paced_sender,
            dict(name="bench-f2h-out", to=inbox, gap=SLOW_GAP if slow else PACED_GAP, **common),
        ),
    ]
    results, counter = measured([server], role_list, plan.deadline + 30)
    lat = results[0]["latencies"]
    if poll is not None:
        how = f"polling every {poll:g} s, plain contract"
    elif extensions:
        how = "long-poll (claim.wait)"
    else:
        how = "plain contract: the client polls 50 ms doubling to 1 s"
    row = Row(
        key,
        f"fire-to-handler latency, {how}",
        len(lat),
        "samples",
        percentile(lat, 50),
        percentile(lat, 99),
        counter.count / len(lat) if lat else None,
        driver_label(kind, extensions),
    )
    return with_cpu(row, counter, results, len(lat))


# -- 6: idle receiver ---------------------------------------------------------------------


def idle(plan: Plan, server: ServerProc, *, key: str, kind: str) -> Row:
    """A receiver with nothing to receive: how many requests does it make?"""
    open_inboxes(kind, server, ["bench-idle"], True)
    role = Role(
        roles.idle_receiver,
        dict(
            kind=kind,
            base_url=server.base_url,
            api_key=server.api_key,
            name="bench-idle",
            wait=plan.idle_wait,
            duration=plan.idle_seconds,
        ),
    )
    [result], counter = measured([server], [role], plan.idle_seconds + 30)
    requests, elapsed = counter.count, result["elapsed"]
    periods = elapsed / plan.idle_wait
    minutes = elapsed / 60
    return Row(
        key,
        f"idle receiver, long-poll wait {plan.idle_wait:g} s, for {elapsed:.0f} s",
        requests / minutes,
        "req/min",
        note=f"{driver_label(kind)}; {requests} requests in {periods:.1f} wait periods",
        server_cpu=counter.cpu / minutes,
        client_cpu=result.get("cpu", 0.0) / minutes,
        extra={"requests": requests, "periods": periods},
    )


# -- batch paths --------------------------------------------------------------------------


def batch(plan: Plan, server: ServerProc, *, key: str) -> Row:
    """One sender, one receiver, raw client: fire.batch, claim.many, outcome.batch."""
    [inbox] = open_inboxes("raw", server, ["bench-batch"], True)
    common = dict(
        base_url=server.base_url,
        api_key=server.api_key,
        count=plan.batch_msgs,
        batch=plan.batch_size,
        deadline=plan.deadline,
    )
    role_list = [
        Role(roles.batch_receiver, dict(task="bench-batch", **common)),
        Role(roles.batch_sender, dict(to=inbox, **common)),
    ]
    results, counter = measured([server], role_list, plan.deadline + 30)
    got = results[0]["received"]
    span = results[0]["t_last"] - results[1]["t_start"]
    row = Row(
        key,
        f"one-way, batched by {plan.batch_size}: fire_many / claim_next(limit) / report_outcomes,"
        " 1 pair",
        rate(got, span),
        "msg/s",
        req_per_msg=counter.count / got if got else None,
        note="raw client (fire.batch, claim.many, outcome.batch)",
    )
    return with_cpu(row, counter, results, got)


def batch_mailbox(plan: Plan, server: ServerProc, *, key: str) -> Row:
    """The Mailbox's batch path: `send_many` (fire.batch) to `receive(batch=n)`."""
    [inbox] = open_inboxes("mailbox", server, ["bench-mbatch"], True)
    common = dict(base_url=server.base_url, api_key=server.api_key, deadline=plan.deadline)
    count = plan.batch_msgs  # as many as row B, so the two (and P3) compare like with like
    role_list = [
        Role(
            roles.mailbox_batch_receiver,
            dict(name="bench-mbatch", count=count, batch=plan.batch_size, **common),
        ),
        Role(
            roles.mailbox_batch_sender,
            dict(name="bench-mbatch-out", to=inbox, count=count, batch=plan.batch_size, **common),
        ),
    ]
    results, counter = measured([server], role_list, plan.deadline + 30)
    got = results[0]["received"]
    span = results[0]["t_last"] - results[1]["t_start"]
    row = Row(
        key,
        f"one-way, Mailbox.send_many of {plan.batch_size} -> Mailbox.receive(batch="
        f"{plan.batch_size}), 1 pair",
        rate(got, span),
        "msg/s",
        req_per_msg=counter.count / got if got else None,
        note=driver_label("mailbox") + ": fire.batch, claim.many, outcome.batch",
    )
    return with_cpu(row, counter, results, got)


# -- H: bounded history ------------------------------------------------------------------


def db_size(plan: Plan, wd: Path, *, key: str) -> Row:
    """A long one-way run (fire_many / claim_next(limit) / report_outcomes) on a
    server keeping 1 s of history, purged every 0.25 s: the SQLite file (and its
    WAL) is measured each second and should stop growing once the purge keeps up."""
    from cuemsg.cueapi import CueClient, FireRequest, OutcomeRequest

    seconds = 10.0 if plan.quick else 30.0  # the file stops growing after about 5 s
    db = wd / "history.db"
    server = start_server(
        str(db),
        label="history",
        workdir=wd,
        args=["--retention", "1s", "--dead-letter-retention", "1s"],
        env={"CUEMSG_RETENTION_INTERVAL": "0.25"},
    )
    try:
        [inbox] = open_inboxes("raw", server, ["bench-history"], True)
        sizes: list[float] = []
        sent = 0
        with CueClient(server.api_key, server.base_url) as client:
            start = time.monotonic()
            next_sample = start + 1.0
            while time.monotonic() - start < seconds:
                client.cues.fire_many(
                    [
                        FireRequest(cue_id=inbox, payload_override={"message": body(sent + i)})
                        for i in range(50)
                    ]
                )
                got = client.executions.claim_next(
                    worker_id="bench-history", task="bench-history", limit=50
                )
                client.executions.report_outcomes(
                    [
                        OutcomeRequest(execution_id=e.execution_id, success=True)
                        for e in got.executions
                    ],
                    worker_id="bench-history",
                )
                sent += 50
                if time.monotonic() >= next_sample:
                    sizes.append(_file_mib(db))
                    next_sample += 1.0
    finally:
        server.stop()
    half = len(sizes) // 2
    steady = max(sizes[half:]) - min(sizes[half:]) if sizes[half:] else None
    return Row(
        key,
        f"SQLite file + WAL after {sent:,} one-way messages, 1 s retention (steady state)",
        sizes[-1] if sizes else None,
        "MiB",
        note=(
            "size each second: "
            + " ".join(f"{x:.1f}" for x in sizes)
            + (f"; second half varies by {steady:.1f} MiB" if steady is not None else "")
        ),
        extra={"sizes_mib": sizes, "messages": sent},
    )


def _file_mib(db: Path) -> float:
    total = sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())
    return total / 2**20


# -- 9: memory ----------------------------------------------------------------------------


def memory(server: ServerProc, receivers: list[dict[str, Any]], key: str) -> list[Row]:
    """Peak RSS of the server (whole SQLite run) and of the largest receiver (8 pairs)."""
    mib = 2**20
    peak_recv = max((r.get("peak_rss", 0) for r in receivers), default=0)
    return [
        Row(
            f"{key}a",
            "peak RSS, server process (SQLite), whole run",
            server.peak_rss() / mib,
            "MiB",
            note="VmHWM of `cuemsg serve`",
        ),
        Row(
            f"{key}b",
            "peak RSS, a receiving client process (8-pair run)",
            peak_recv / mib or None,
            "MiB",
            note="ru_maxrss of the largest receiver",
        ),
    ]
