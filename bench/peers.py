"""Reference peers a user might pick instead: request/reply over NATS and over Redis lists.

Same shape as the RPC row: one requester process, one responder process, one
call at a time, the same ~256-byte JSON body echoed back. Neither keeps what
cuemsg keeps: NATS core (no JetStream) is not durable, and a Redis list keeps
no delivery record and no lease (a reply popped by a crashed process is gone).
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
import uuid
from typing import Any

from bench.drivers import body
from bench.procs import HOST, Role, RoleContext, run_roles
from bench.report import Row, percentile

NATS_PORT = 4222
REDIS_PORT = 6379
SUBJECT = "cuemsg.bench.rpc"


def reachable(port: int) -> bool:
    """True when something listens on the loopback `port`."""
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


# -- NATS ---------------------------------------------------------------------------------


def nats_responder(ctx: RoleContext) -> dict[str, Any]:
    """Answer every request on SUBJECT with its own body, until `stop`."""

    async def main() -> int:
        import nats

        nc = await nats.connect(f"nats://{HOST}:{NATS_PORT}")
        served = 0

        async def on_msg(msg: Any) -> None:
            nonlocal served
            await msg.respond(msg.data)
            served += 1

        await nc.subscribe(SUBJECT, cb=on_msg)
        await nc.flush()
        ctx.ready(block=False)
        while not ctx.stop.is_set():
            await asyncio.sleep(0.05)
        await nc.drain()
        return served

    return {"served": asyncio.run(main())}


def nats_requester(ctx: RoleContext, *, count: int, deadline: float) -> dict[str, Any]:
    """`count` requests one after another; times each."""

    async def main() -> dict[str, Any]:
        import nats

        nc = await nats.connect(f"nats://{HOST}:{NATS_PORT}")
        for i in range(20):  # warm-up, and waits until the responder has subscribed
            for _ in range(100):
                try:
                    await nc.request(SUBJECT, json.dumps(body(i)).encode(), timeout=5)
                    break
                except nats.errors.NoRespondersError:
                    await asyncio.sleep(0.05)
        ctx.ready()
        latencies: list[float] = []
        start = time.perf_counter()
        while len(latencies) < count and time.perf_counter() - start < deadline:
            t0 = time.perf_counter()
            reply = await nc.request(SUBJECT, json.dumps(body(len(latencies))).encode(), timeout=5)
            json.loads(reply.data)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        await nc.close()
        return {"latencies": latencies, "elapsed": elapsed}

    return asyncio.run(main())


# -- Redis lists --------------------------------------------------------------------------


def redis_responder(ctx: RoleContext, *, queue: str) -> dict[str, Any]:
    """BRPOP requests from `queue`, LPUSH each body back on its `reply_to` list."""
    import redis

    r = redis.Redis(host=HOST, port=REDIS_PORT)
    served = 0
    ctx.ready(block=False)
    while not ctx.stop.is_set():
        item = r.brpop([queue], timeout=1)
        if item is None:
            continue
        req = json.loads(item[1])
        r.lpush(req["reply_to"], json.dumps({"id": req["id"], "body": req["body"]}))
        served += 1
    r.close()
    return {"served": served}


def redis_requester(ctx: RoleContext, *, queue: str, count: int, deadline: float) -> dict[str, Any]:
    """LPUSH a request, BRPOP the reply from a private list; `count` times."""
    import redis

    r = redis.Redis(host=HOST, port=REDIS_PORT)
    reply_to = f"cuemsg:bench:reply:{uuid.uuid4().hex}"

    def call(seq: int) -> None:
        rid = uuid.uuid4().hex
        r.lpush(queue, json.dumps({"id": rid, "reply_to": reply_to, "body": body(seq)}))
        item = r.brpop([reply_to], timeout=5)
        if item is None or json.loads(item[1])["id"] != rid:
            raise RuntimeError("no matching reply from the Redis responder in 5 s")

    for i in range(20):  # warm-up; BRPOP waits out the responder's start
        call(i)
    ctx.ready()
    latencies: list[float] = []
    start = time.perf_counter()
    while len(latencies) < count and time.perf_counter() - start < deadline:
        t0 = time.perf_counter()
        call(len(latencies))
        latencies.append(time.perf_counter() - t0)
    elapsed = time.perf_counter() - start
    r.delete(reply_to)
    r.close()
    return {"latencies": latencies, "elapsed": elapsed}


# -- rows ---------------------------------------------------------------------------------


def peer_row(
    key: str,
    name: str,
    port: int,
    roles: tuple[Any, Any],
    count: int,
    deadline: float,
    note: str,
    **kwargs: Any,
) -> Row:
    """A request/reply row for one peer, or a row saying why it could not run."""
    case = f"{name} request/reply, 1 caller, 1 responder"
    if not reachable(port):
        return Row(key, case, note=f"skipped: nothing listens on {HOST}:{port}")
    responder, requester = roles
    results = run_roles(
        [
            Role(responder, kwargs),
            Role(requester, {"count": count, "deadline": deadline, **kwargs}),
        ],
        timeout=deadline + 30,
        stop_after=[1],
    )
    lat = results[1]["latencies"]
    return Row(
        key,
        case,
        len(lat) / results[1]["elapsed"],
        "call/s",
        percentile(lat, 50),
        percentile(lat, 99),
        note=note,
    )


def nats_row(key: str, count: int, deadline: float) -> Row:
    return peer_row(
        key,
        "NATS core",
        NATS_PORT,
        (nats_responder, nats_requester),
        count,
        deadline,
        "nats-py; not durable, no record (no JetStream)",
    )


def redis_row(key: str, count: int, deadline: float) -> Row:
    return peer_row(
        key,
        "Redis lists (LPUSH/BRPOP)",
        REDIS_PORT,
        (redis_responder, redis_requester),
        count,
        deadline,
        "redis-py; no delivery record, no lease",
        queue=f"cuemsg:bench:req:{uuid.uuid4().hex}",
    )
