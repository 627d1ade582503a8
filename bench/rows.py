"""The rows of the table: each starts the roles it needs and turns their results into `Row`s.

Request counts come from the servers' `/health` counter, read once when
every role is ready and once when all have finished; rows run one after
another, so nothing else talks to a server in between.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bench import roles
from bench.drivers import driver_label, make_driver
from bench.procs import Role, ServerProc, run_roles
from bench.report import Row, percentile


@dataclass(frozen=True)
class Plan:
    """How much each row does: the full run (~5 min) or `--quick` (~1 min)."""

    quick: bool
    floor_seconds: float
    one_pair: int  # messages, one pair
    per_pair: int  # messages per pair, 8 pairs
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

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 1.0, 100, 20, 40, 40, 15, 4, 2.0, 6.0, 600, 50, 200, 30.0)
        return cls(False, 4.0, 600, 150, 300, 400, 60, 20, 10.0, 40.0, 5000, 50, 2000, 90.0)


class Counter:
    """Requests the given servers answered between `start()` and `stop()`."""

    def __init__(self, servers: list[ServerProc]) -> None:
        self.servers = servers
        self.before = 0
        self.count = 0

    def start(self) -> None:
        self.before = sum(s.requests() for s in self.servers)

    def stop(self) -> int:
        # each `requests()` call made after start() is one request more on its server
        self.count = sum(s.requests() for s in self.servers) - self.before - len(self.servers)
        return self.count


def open_inboxes(kind: str, server: ServerProc, names: list[str], extensions: bool) -> list[str]:
    """Open (create) the named inboxes from the parent; their addresses."""
    out = []
    for name in names:
        drv = make_driver(kind, server.base_url, server.api_key, name, extensions=extensions)
        out.append(drv.address)
        drv.close()
    return out


def rate(n: int, seconds: float) -> float | None:
    return n / seconds if seconds > 0 else None


# -- 1: the HTTP floor --------------------------------------------------------------------


def floor(plan: Plan, server: ServerProc, clients: int, key: str) -> Row:
    """`GET /v1/cues/{id}` from `clients` processes, each one request at a time."""
    cue_id = open_inboxes("raw", server, ["bench-floor"], True)[0]
    kw = dict(base_url=server.base_url, api_key=server.api_key, cue_id=cue_id)
    results = run_roles(
        [Role(roles.floor, {**kw, "duration": plan.floor_seconds}) for _ in range(clients)],
        timeout=plan.floor_seconds + 30,
        samplers=[server],
    )
    lat = [x for r in results for x in r["latencies"]]
    elapsed = max(r["elapsed"] for r in results)
    who = "1 client process" if clients == 1 else f"{clients} client processes"
    return Row(
        key,
        f"HTTP floor: GET /v1/cues/{{id}}, {who}, sequential each",
        rate(len(lat), elapsed),
        "req/s",
        percentile(lat, 50),
        percentile(lat, 99),
        note="raw httpx, keep-alive",
    )


# -- 2, 3, 7: one-way messages ------------------------------------------------------------


def one_way(
    plan: Plan,
    servers: list[ServerProc],
    *,
    key: str,
    case: str,
    pairs: int,
    per_pair: int,
    kind: str,
    extensions: bool = True,
    prefix: str,
) -> tuple[Row, list[dict[str, Any]]]:
    """`pairs` sender/receiver processes, each pair on its own inbox; send -> receive -> ack.

    With several servers (replicas) pair i sends through server i and receives
    through the next one, so every message crosses replicas.
    """
    n = len(servers)
    inboxes = open_inboxes(
        kind, servers[0], [f"{prefix}-in-{i}" for i in range(pairs)], extensions
    )
    role_list: list[Role] = []
    for i in range(pairs):
        send_srv, recv_srv = servers[i % n], servers[(i + 1) % n]
        common = dict(kind=kind, count=per_pair, deadline=plan.deadline, extensions=extensions)
        role_list.append(
            Role(
                roles.receiver,
                dict(
                    base_url=recv_srv.base_url,
                    api_key=recv_srv.api_key,
                    name=f"{prefix}-in-{i}",
                    **common,
                ),
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
    counter = Counter(servers)
    results = run_roles(
        role_list, timeout=plan.deadline + 30, before_go=counter.start, samplers=servers
    )
    requests = counter.stop()
    receivers, senders = results[0::2], results[1::2]
    got = sum(r["received"] for r in receivers)
    span = max(r["t_last"] for r in receivers) - min(r["t_start"] for r in senders)
    lat = [x for r in receivers for x in r["latencies"]]
    note = driver_label(kind, extensions)
    if got < pairs * per_pair:
        note += f"; only {got}/{pairs * per_pair} arrived before the deadline"
    row = Row(
        key,
        case,
        rate(got, span),
        "msg/s",
        percentile(lat, 50),
        percentile(lat, 99),
        requests / got if got else None,
        note,
        extra={"requests": requests, "messages": got},
    )
    return row, receivers


def cycle(plan: Plan, server: ServerProc, *, key: str, kind: str) -> Row:
    """One client: send to itself, receive, ack, one message at a time."""
    counter = Counter([server])
    [result] = run_roles(
        [
            Role(
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
        ],
        timeout=plan.deadline + 30,
        before_go=counter.start,
        samplers=[server],
    )
    requests = counter.stop()
    lat = result["latencies"]
    return Row(
        key,
        "one-way cycle: 1 client, send -> receive -> ack, one at a time",
        rate(len(lat), result["elapsed"]),
        "msg/s",
        percentile(lat, 50),
        percentile(lat, 99),
        requests / len(lat) if lat else None,
        driver_label(kind),
    )


# -- 4: RPC -------------------------------------------------------------------------------


def rpc(plan: Plan, server: ServerProc, *, key: str, kind: str) -> Row:
    """One requester, one responder: `request` against `serve`, one call at a time."""
    [svc] = open_inboxes(kind, server, ["bench-svc"], True)
    common = dict(kind=kind, base_url=server.base_url, api_key=server.api_key)
    counter = Counter([server])
    results = run_roles(
        [
            Role(roles.responder, dict(name="bench-svc", **common)),
            Role(
                roles.requester,
                dict(name="bench-caller", to=svc, count=plan.rpc_calls, deadline=plan.deadline, **common),
            ),
        ],
        timeout=plan.deadline + 30,
        before_go=counter.start,
        stop_after=[1],
        samplers=[server],
    )
    requests = counter.stop()
    lat = results[1]["latencies"]
    return Row(
        key,
        "RPC: request -> serve -> reply, 1 caller, 1 responder (long-poll)",
        rate(len(lat), results[1]["elapsed"]),
        "call/s",
        percentile(lat, 50),
        percentile(lat, 99),
        requests / len(lat) if lat else None,
        driver_label(kind),
    )


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
    gap = (0.3, 1.3) if slow else (0.02, 0.08)
    [inbox] = open_inboxes(kind, server, ["bench-f2h"], extensions)
    common = dict(
        kind=kind,
        base_url=server.base_url,
        api_key=server.api_key,
        count=count,
        deadline=plan.deadline,
        extensions=extensions,
    )
    counter = Counter([server])
    results = run_roles(
        [
            Role(roles.handler_receiver, dict(name="bench-f2h", poll=poll, **common)),
            Role(roles.paced_sender, dict(name="bench-f2h-out", to=inbox, gap=gap, **common)),
        ],
        timeout=plan.deadline + 30,
        before_go=counter.start,
        samplers=[server],
    )
    requests = counter.stop()
    lat = results[0]["latencies"]
    if poll is not None:
        how = f"polling every {poll:g} s, plain contract"
    elif extensions:
        how = "long-poll (claim.wait)"
    else:
        how = "plain contract: the client polls 50 ms doubling to 1 s"
    return Row(
        key,
        f"fire-to-handler latency, {how}",
        len(lat),
        "samples",
        percentile(lat, 50),
        percentile(lat, 99),
        requests / len(lat) if lat else None,
        driver_label(kind, extensions),
    )


# -- 6: idle receiver ---------------------------------------------------------------------


def idle(plan: Plan, server: ServerProc, *, key: str, kind: str) -> Row:
    """A receiver with nothing to receive: how many requests does it make?"""
    open_inboxes(kind, server, ["bench-idle"], True)
    counter = Counter([server])
    [result] = run_roles(
        [
            Role(
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
        ],
        timeout=plan.idle_seconds + 30,
        before_go=counter.start,
        samplers=[server],
    )
    requests = counter.stop()
    elapsed = result["elapsed"]
    periods = elapsed / plan.idle_wait
    return Row(
        key,
        f"idle receiver, wait {plan.idle_wait:g} s, for {elapsed:.0f} s",
        requests / elapsed * 60,
        "req/min",
        note=f"{driver_label(kind)}; {requests} requests in {periods:.1f} wait periods",
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
    counter = Counter([server])
    results = run_roles(
        [
            Role(roles.batch_receiver, dict(task="bench-batch", **common)),
            Role(roles.batch_sender, dict(to=inbox, **common)),
        ],
        timeout=plan.deadline + 30,
        before_go=counter.start,
        samplers=[server],
    )
    requests = counter.stop()
    got = results[0]["received"]
    span = results[0]["t_last"] - results[1]["t_start"]
    return Row(
        key,
        f"one-way, batched: fire_many / claim_next(limit) / report_outcomes of {plan.batch_size}, 1 pair",
        rate(got, span),
        "msg/s",
        req_per_msg=requests / got if got else None,
        note="raw client (fire.batch, claim.many, outcome.batch)",
    )


# -- 9: memory ----------------------------------------------------------------------------


def memory(server: ServerProc, receivers: list[dict[str, Any]], key: str) -> list[Row]:
    mib = 2**20
    peak_recv = max((r.get("peak_rss", 0) for r in receivers), default=0)
    return [
        Row(f"{key}a", "peak RSS, server process (SQLite), whole run", server.peak_rss() / mib, "MiB",
            note="VmHWM of `cuemsg serve`"),
        Row(f"{key}b", "peak RSS, a receiving client process (8-pair run)", peak_recv / mib or None,
            "MiB", note="ru_maxrss of the largest receiver"),
    ]


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


Step = Callable[[], None]
