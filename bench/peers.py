"""Reference peers a user might pick instead, run side by side with cuemsg.

Request/reply over NATS core and over Redis lists: the shape of the RPC row
(one requester process, one responder process, one call at a time, the same
~256-byte JSON body echoed back). Neither keeps what cuemsg keeps: NATS core
(no JetStream) is not durable, and a Redis list keeps no delivery record and
no lease (a reply popped by a crashed process is gone).

Durable messaging over NATS JetStream and RabbitMQ, in the three one-way
shapes of the table (one at a time, separate processes for a fixed time,
batches of 50), each row saying what the broker promises as configured.
"""

from __future__ import annotations

import asyncio
import contextlib
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


# -- durable peers: NATS JetStream and RabbitMQ --------------------------------------------
#
# The three shapes of the one-way table, run the same way for each broker:
# "cycle" (one client publishes, receives and acks one message at a time),
# "timed" (a sender and a receiver process for a fixed time: consumed rate and
# the backlog left) and "batch" (publish 50, await their acks; fetch 50, ack).

RABBIT_PORT = 5672
JS_STREAM = "CUEMSG_BENCH"
JS_SUBJECT = "cuemsg.bench.durable"
JS_PROMISE = (
    "nats-py; file-backed stream, publish acked after the write (fsync every 2 min, the"
    " default sync_interval), durable pull consumer, explicit ack (an unconfirmed frame)"
)
RABBIT_PROMISE = (
    "aio-pika; durable queue, persistent messages, publisher confirm after the disk"
    " write, manual ack (an unconfirmed frame)"
)


class JetStream:
    """A file-backed stream with one durable pull consumer (explicit ack)."""

    name = "NATS JetStream"
    port = NATS_PORT

    async def connect(self, *, fresh: bool, consumer: bool = True) -> None:
        import nats
        from nats.js.api import ConsumerConfig, StorageType

        self.nc = await nats.connect(f"nats://{HOST}:{NATS_PORT}")
        self.js = self.nc.jetstream()
        if fresh:
            with contextlib.suppress(Exception):
                await self.js.delete_stream(JS_STREAM)
            await self.js.add_stream(
                name=JS_STREAM, subjects=[JS_SUBJECT], storage=StorageType.FILE
            )
        if consumer:
            self.sub = await self.js.pull_subscribe(
                JS_SUBJECT, durable="bench", stream=JS_STREAM, config=ConsumerConfig()
            )

    async def publish(self, data: bytes) -> None:
        await self.js.publish(JS_SUBJECT, data, stream=JS_STREAM)

    async def publish_many(self, items: list[bytes]) -> None:
        await asyncio.gather(*(self.publish(d) for d in items))

    async def fetch(self, n: int, timeout: float) -> list[Any]:
        import nats

        try:
            return list(await self.sub.fetch(batch=n, timeout=timeout))
        except nats.errors.TimeoutError:
            return []

    async def ack(self, msgs: list[Any]) -> None:
        for msg in msgs:
            await msg.ack()

    async def close(self, *, drop: bool) -> None:
        if drop:
            with contextlib.suppress(Exception):
                await self.js.delete_stream(JS_STREAM)
        await self.nc.close()


class Rabbit:
    """A durable queue, persistent messages, publisher confirms, manual ack."""

    name = "RabbitMQ"
    port = RABBIT_PORT
    queue_name = "cuemsg.bench.durable"

    async def connect(self, *, fresh: bool, consumer: bool = True) -> None:
        import aio_pika

        self.conn = await aio_pika.connect(host=HOST, port=RABBIT_PORT)
        self.channel = await self.conn.channel(publisher_confirms=True)
        await self.channel.set_qos(prefetch_count=100)
        self.queue = await self.channel.declare_queue(self.queue_name, durable=True)
        if fresh:
            await self.queue.purge()
        self.inbox: asyncio.Queue[Any] = asyncio.Queue()
        self.consuming = False

    async def publish(self, data: bytes) -> None:
        import aio_pika

        message = aio_pika.Message(data, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self.channel.default_exchange.publish(message, routing_key=self.queue_name)

    async def publish_many(self, items: list[bytes]) -> None:
        await asyncio.gather(*(self.publish(d) for d in items))

    async def fetch(self, n: int, timeout: float) -> list[Any]:
        if not self.consuming:  # a consumer pushes into `inbox` within the prefetch window
            await self.queue.consume(self.inbox.put)
            self.consuming = True
        try:
            got = [await asyncio.wait_for(self.inbox.get(), timeout)]
        except asyncio.TimeoutError:
            return []
        while len(got) < n and not self.inbox.empty():
            got.append(self.inbox.get_nowait())
        return got

    async def ack(self, msgs: list[Any]) -> None:
        for msg in msgs:
            await msg.ack()

    async def close(self, *, drop: bool) -> None:
        if drop:
            with contextlib.suppress(Exception):
                await self.queue.delete(if_unused=False, if_empty=False)
        await self.conn.close()


BROKERS: dict[str, Any] = {"jetstream": JetStream, "rabbitmq": Rabbit}


def _data(seq: int) -> bytes:
    return json.dumps(body(seq)).encode()


def broker_cycle(ctx: RoleContext, *, broker: str, count: int, deadline: float) -> dict[str, Any]:
    """One client: publish (await its ack), fetch it back, ack it; `count` times."""

    async def main() -> dict[str, Any]:
        b = BROKERS[broker]()
        await b.connect(fresh=True)
        for i in range(20):  # warm-up
            await b.publish(_data(i))
            await b.ack(await b.fetch(1, 5))
        ctx.ready()
        lat: list[float] = []
        start = time.perf_counter()
        while len(lat) < count and time.perf_counter() - start < deadline:
            t0 = time.perf_counter()
            await b.publish(_data(len(lat)))
            got = await b.fetch(1, 5)
            if not got:
                raise RuntimeError(f"{b.name}: a published message did not come back in 5 s")
            json.loads(got[0].data if broker == "jetstream" else got[0].body)
            await b.ack(got)
            lat.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        await b.close(drop=True)
        return {"latencies": lat, "elapsed": elapsed}

    return asyncio.run(main())


def broker_sender(
    ctx: RoleContext, *, broker: str, seconds: float, batch: int, count: int
) -> dict[str, Any]:
    """Publish for `seconds` (or `count` messages), `batch` at a time, each awaiting its ack."""

    async def main() -> dict[str, Any]:
        b = BROKERS[broker]()
        await b.connect(fresh=False, consumer=False)
        ctx.ready()
        sent = 0
        start = time.time()
        while sent < count and time.time() - start < seconds:
            if batch == 1:
                await b.publish(_data(sent))
            else:
                await b.publish_many([_data(sent + i) for i in range(batch)])
            sent += batch
        end = time.time()
        await b.close(drop=False)
        return {"sent": sent, "t_start": start, "t_end": end}

    return asyncio.run(main())


def broker_receiver(
    ctx: RoleContext, *, broker: str, seconds: float, batch: int, count: int
) -> dict[str, Any]:
    """Fetch and ack, `batch` at a time, until `count` or `seconds` after the start."""

    async def main() -> dict[str, Any]:
        b = BROKERS[broker]()
        await b.connect(fresh=False)
        ctx.ready()
        got = 0
        lat: list[float] = []
        start = time.time()
        t_last = start
        while got < count and (left := start + seconds - time.time()) > 0:
            msgs = await b.fetch(batch, min(left, 1.0))
            now = time.time()
            for m in msgs:
                lat.append(now - json.loads(m.data if broker == "jetstream" else m.body)["sent_at"])
            await b.ack(msgs)
            got += len(msgs)
            if msgs:
                t_last = time.time()
        await b.close(drop=False)
        return {"received": got, "t_last": t_last, "latencies": lat}

    return asyncio.run(main())


def broker_cpu(port: int) -> float | None:
    """CPU seconds used so far by the process listening on loopback `port` (None if unseen)."""
    import psutil

    try:
        for conn in psutil.net_connections("tcp"):
            if conn.laddr and conn.laddr.port == port and conn.status == "LISTEN" and conn.pid:
                t = psutil.Process(conn.pid).cpu_times()
                return float(t.user + t.system)
    except psutil.Error:
        return None
    return None


def _prepare(broker: str, *, drop: bool = False) -> None:
    """A fresh stream or queue (each timed or batch run starts empty); `drop` removes it."""

    async def main() -> None:
        b = BROKERS[broker]()
        await b.connect(fresh=True, consumer=not drop)
        await b.close(drop=drop)

    asyncio.run(main())


def durable_row(key: str, broker: str, shape: str, *, count: int, seconds: float) -> Row:
    """One shape ("cycle", "timed", "batch") on one broker, or a row saying why not."""
    cls = BROKERS[broker]
    cases = {
        "cycle": "one client, publish -> receive -> ack, one at a time",
        "timed": f"sender and receiver processes for {seconds:g} s, consumed",
        "batch": "batches of 50, 1 sender, 1 receiver",
    }
    case = f"{cls.name}: {cases[shape]}"
    note = JS_PROMISE if broker == "jetstream" else RABBIT_PROMISE
    if not reachable(cls.port):
        return Row(key, case, note=f"skipped: nothing listens on {HOST}:{cls.port}")
    cpu: list[float | None] = []
    if shape == "cycle":
        kw = {"broker": broker, "count": count, "deadline": seconds}
        [res] = run_roles(
            [Role(broker_cycle, kw)],
            timeout=seconds + 30,
            before_go=lambda: cpu.append(broker_cpu(cls.port)),
        )
        after = broker_cpu(cls.port)
        lat = res["latencies"]
        row = Row(key, case, len(lat) / res["elapsed"], "msg/s", percentile(lat, 50),
                  percentile(lat, 99), note=note)  # fmt: skip
        n = len(lat)
        results = [res]
    else:
        _prepare(broker)
        batch = 1 if shape == "timed" else 50
        kw = {"broker": broker, "seconds": seconds, "batch": batch, "count": count}
        results = run_roles(
            [Role(broker_receiver, kw), Role(broker_sender, kw)],
            timeout=seconds + 30,
            before_go=lambda: cpu.append(broker_cpu(cls.port)),
        )
        after = broker_cpu(cls.port)
        _prepare(broker, drop=True)
        recv, send = results
        n = recv["received"]
        if shape == "timed":
            span = send["t_end"] - send["t_start"]
            backlog = send["sent"] - n
            note = (f"{send['sent'] / span:,.0f}/s sent, backlog {backlog:,} at the end; "
                    + note)  # fmt: skip
            row = Row(key, case, n / span, "msg/s", percentile(recv["latencies"], 50),
                      percentile(recv["latencies"], 99), note=note)  # fmt: skip
            row.extra = {"sent": send["sent"], "backlog": backlog}
        else:
            span = recv["t_last"] - send["t_start"]
            row = Row(key, case, n / span if span > 0 else None, "msg/s", note=note)
    if n and cpu and cpu[0] is not None and after is not None:
        row.server_cpu = (after - cpu[0]) / n
        row.client_cpu = sum(r.get("cpu", 0.0) for r in results) / n
    return row
