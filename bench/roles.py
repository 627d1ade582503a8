"""Client roles: each runs in its own process (see `procs.run_roles`).

A role sets up (connects, opens its inbox), calls `ctx.ready()`, then does
its bounded work: a count of messages or a duration, and always a deadline.
It returns a plain dict of numbers (latencies in seconds). Times compared
across processes are `time.time()` (one clock on one machine); times within
a process are `time.perf_counter()`.
"""

from __future__ import annotations

import random
import time
from typing import Any

from bench.drivers import body, make_driver
from bench.procs import RoleContext, server_requests

Result = dict[str, Any]


def floor(
    ctx: RoleContext,
    *,
    base_url: str,
    api_key: str,
    cue_id: str,
    duration: float,
    gap: tuple[float, float] | None = None,
    stdlib: bool = False,
) -> Result:
    """The HTTP floor: sequential `GET /v1/cues/{id}` on one keep-alive connection.

    `gap`: pause a random time in this range before each request.
    `stdlib`: bare `http.client` instead of cuemsg's `CueClient`.
    """
    path = f"/v1/cues/{cue_id}"
    headers = {"Authorization": f"Bearer {api_key}", "Accept": "application/json"}
    if stdlib:
        import http.client
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=10)

        def get() -> None:
            conn.request("GET", path, headers=headers)
            answer = conn.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"GET {path}: {answer.status} {data[:200]!r}")

        close = conn.close
    else:
        # The same HTTP stack the message rows use, so the ratios compare like with like.
        from cuemsg import CueClient

        client = CueClient(api_key, base_url, timeout=10)

        def get() -> None:
            client.cues.get(cue_id)

        close = client.close
    rng = random.Random(11)
    latencies: list[float] = []
    try:
        for _ in range(50):  # warm the connection and the server's key cache
            get()
        ctx.ready()
        start = time.perf_counter()
        end = start + duration
        while (now := time.perf_counter()) < end:
            if gap is not None:
                time.sleep(rng.uniform(*gap))
                now = time.perf_counter()
            get()
            latencies.append(time.perf_counter() - now)
        return {"latencies": latencies, "elapsed": time.perf_counter() - start}
    finally:
        close()


def sender(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    to: str,
    count: int,
    deadline: float,
    extensions: bool = True,
) -> Result:
    """Send `count` messages to `to`, one after another."""
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions)
    try:
        ctx.ready()
        start = time.time()
        sent = 0
        while sent < count and time.time() - start < deadline:
            drv.send(to, body(sent))
            sent += 1
        return {"sent": sent, "t_start": start, "t_end": time.time(), "label": drv.label}
    finally:
        drv.close()


def receiver(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    count: int,
    deadline: float,
    wait: float = 5.0,
    extensions: bool = True,
    batch: int | None = None,
) -> Result:
    """Receive and ack `count` messages (or stop at the deadline); `batch`: the Mailbox's
    `receive(prefetch=)` (None: its default).

    Before the start it receives one message of its own, so what a receiver
    does once when it starts (the Mailbox's first presence heartbeat) is not
    counted against the messages: the row shows the steady-state cost.
    """
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions, batch=batch)
    try:
        drv.send(drv.address, body(-1))
        warm = drv.receive(min(wait, 5.0))
        if warm is not None:
            drv.ack(warm)
        time.sleep(0.2)  # let a background presence heartbeat finish before the count starts
        ctx.ready()
        start = time.time()
        got = 0
        latencies: list[float] = []
        t_first = t_last = 0.0
        while got < count and (left := deadline - (time.time() - start)) > 0:
            msg = drv.receive(min(wait, left))
            if msg is None:
                continue
            now = time.time()
            latencies.append(now - drv.body_of(msg)["sent_at"])
            drv.ack(msg)
            got += 1
            t_first = t_first or now
            t_last = time.time()
        return {"received": got, "t_first": t_first, "t_last": t_last, "latencies": latencies}
    finally:
        drv.close()


def cycle(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    count: int,
    deadline: float,
    extensions: bool = True,
) -> Result:
    """One client, one message at a time: send to itself, receive, ack. Times each cycle."""
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions)
    try:
        for i in range(5):  # warm-up
            drv.send(drv.address, body(i))
            msg = drv.receive(5.0)
            if msg is not None:
                drv.ack(msg)
        ctx.ready()
        start = time.perf_counter()
        cycles: list[float] = []
        while len(cycles) < count and time.perf_counter() - start < deadline:
            t0 = time.perf_counter()
            drv.send(drv.address, body(len(cycles)))
            msg = drv.receive(5.0)
            if msg is None:
                raise RuntimeError("a message sent to itself did not arrive in 5 s")
            drv.ack(msg)
            cycles.append(time.perf_counter() - t0)
        return {"latencies": cycles, "elapsed": time.perf_counter() - start}
    finally:
        drv.close()


def paced_sender(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    to: str,
    count: int,
    gap: tuple[float, float],
    deadline: float,
    extensions: bool = True,
) -> Result:
    """Send `count` messages with a random pause (uniform in `gap`) before each.

    The random pauses put the fires at random phases of a polling receiver's cycle.
    """
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions)
    rng = random.Random(7)
    try:
        ctx.ready()
        start = time.time()
        sent = 0
        while sent < count and time.time() - start < deadline:
            time.sleep(rng.uniform(*gap))
            drv.send(to, body(sent))
            sent += 1
        return {"sent": sent}
    finally:
        drv.close()


def handler_receiver(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    count: int,
    deadline: float,
    poll: float | None,
    extensions: bool = True,
) -> Result:
    """Fire-to-handler latency: long-poll (`poll` None) or poll every `poll` seconds."""
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions)
    try:
        ctx.ready()
        start = time.time()
        latencies: list[float] = []
        while len(latencies) < count and (left := deadline - (time.time() - start)) > 0:
            msg = drv.receive(min(5.0, left) if poll is None else 0.0)
            if msg is None:
                if poll is not None:
                    time.sleep(min(poll, max(left, 0.0)))
                continue
            latencies.append(time.time() - drv.body_of(msg)["sent_at"])
            drv.ack(msg)
        return {"latencies": latencies}
    finally:
        drv.close()


def idle_receiver(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    wait: float,
    duration: float,
    extensions: bool = True,
) -> Result:
    """Receive on an inbox nobody sends to, for `duration` seconds, long-polls of `wait` s."""
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions, poll_wait=wait)
    try:
        ctx.ready()
        start = time.perf_counter()
        drv.idle(duration, wait)
        return {"elapsed": time.perf_counter() - start}
    finally:
        drv.close()


def responder(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    extensions: bool = True,
) -> Result:
    """Serve requests (echo the body) until the parent sets `stop`."""
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions, poll_wait=1.0)
    try:
        ctx.ready(block=False)
        served = drv.serve(lambda msg: msg, ctx.stop.is_set)
        return {"served": served}
    finally:
        drv.close()


def requester(
    ctx: RoleContext,
    *,
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    to: str,
    count: int,
    deadline: float,
    extensions: bool = True,
) -> Result:
    """Make `count` requests, one after another; time each round trip.

    `requests`: the requests the server answered from the first call to the
    last answer (row 4's requests per call): neither the warm-up's leftovers
    (its last reply ack, recorded on a linger) nor what both sides send while
    they close.
    """
    drv = make_driver(kind, base_url, api_key, name, extensions=extensions)
    try:
        for i in range(3):  # warm-up (opens the reply stream)
            drv.request(to, body(i), timeout=10)
        ctx.ready()
        before = server_requests(base_url)
        start = time.perf_counter()
        latencies: list[float] = []
        while len(latencies) < count and time.perf_counter() - start < deadline:
            t0 = time.perf_counter()
            drv.request(to, body(len(latencies)), timeout=10)
            latencies.append(time.perf_counter() - t0)
        elapsed = time.perf_counter() - start
        # `server_requests` leaves its own /health out; the first one counts in the second
        after = server_requests(base_url) - 1
        return {"latencies": latencies, "elapsed": elapsed, "requests": after - before}
    finally:
        drv.close()


# -- batch paths (raw client: fire.batch, claim.many, outcome.batch) ------------------------


def batch_sender(
    ctx: RoleContext,
    *,
    base_url: str,
    api_key: str,
    to: str,
    count: int,
    batch: int,
    deadline: float,
) -> Result:
    """Send `count` messages in `fire_many` batches of `batch`."""
    from cuemsg.cueapi import CueClient, FireRequest

    with CueClient(api_key, base_url) as client:
        client.extensions  # noqa: B018 - probe before the clock starts
        ctx.ready()
        start = time.time()
        sent = 0
        while sent < count and time.time() - start < deadline:
            n = min(batch, count - sent)
            client.cues.fire_many(
                [
                    FireRequest(cue_id=to, payload_override={"message": body(sent + i)})
                    for i in range(n)
                ]
            )
            sent += n
        return {"sent": sent, "t_start": start, "t_end": time.time()}


def mailbox_batch_sender(
    ctx: RoleContext,
    *,
    base_url: str,
    api_key: str,
    name: str,
    to: str,
    count: int,
    batch: int,
    deadline: float,
) -> Result:
    """Send `count` messages with `Mailbox.send_many` (fire.batch), `batch` at a time."""
    drv = make_driver("mailbox", base_url, api_key, name)
    mailbox = getattr(drv, "mailbox", None)
    try:
        ctx.ready()
        start = time.time()
        sent = 0
        while sent < count and time.time() - start < deadline:
            n = min(batch, count - sent)
            bodies = [body(sent + i) for i in range(n)]
            if mailbox is not None:
                mailbox.send_many(to, bodies)
            else:  # no Mailbox yet: one by one
                for item in bodies:
                    drv.send(to, item)
            sent += n
        return {"sent": sent, "t_start": start, "t_end": time.time()}
    finally:
        drv.close()


def mailbox_batch_receiver(
    ctx: RoleContext,
    *,
    base_url: str,
    api_key: str,
    name: str,
    count: int,
    batch: int,
    deadline: float,
) -> Result:
    """Receive `count` messages with `Mailbox.receive(batch=n)`: claims of up to n, the
    loop's acks recorded together (outcome.batch) before the next claim."""
    drv = make_driver("mailbox", base_url, api_key, name)
    mailbox = drv.mailbox  # type: ignore[attr-defined]
    try:
        ctx.ready()
        start = time.time()
        got = 0
        t_first = 0.0
        while got < count and time.time() - start < deadline:
            for _msg in mailbox.receive(wait=5.0, batch=batch, limit=count - got):
                got += 1
                t_first = t_first or time.time()
        return {"received": got, "t_first": t_first, "t_last": time.time()}
    finally:
        drv.close()


def batch_receiver(
    ctx: RoleContext,
    *,
    base_url: str,
    api_key: str,
    task: str,
    count: int,
    batch: int,
    deadline: float,
) -> Result:
    """Claim up to `batch` at once (`claim_next(limit=)`), ack them in one `report_outcomes`."""
    from cuemsg.cueapi import CueClient, OutcomeRequest

    worker = f"bench-batch-{task}"
    with CueClient(api_key, base_url) as client:
        client.extensions  # noqa: B018
        ctx.ready()
        start = time.time()
        got = 0
        t_first = t_last = 0.0
        while got < count and (left := deadline - (time.time() - start)) > 0:
            res = client.executions.claim_next(
                worker_id=worker, task=task, wait=min(5.0, left), limit=batch
            )
            if not res.claimed:
                continue
            t_first = t_first or time.time()
            client.executions.report_outcomes(
                [OutcomeRequest(execution_id=e.execution_id, success=True) for e in res.executions],
                worker_id=worker,
            )
            got += len(res.executions)
            t_last = time.time()
        return {"received": got, "t_first": t_first, "t_last": t_last}


# -- ask many ---------------------------------------------------------------------------------


def gatherer(
    ctx: RoleContext,
    *,
    base_url: str,
    api_key: str,
    name: str,
    to: list[str],
    count: int,
    deadline: float,
) -> Result:
    """`Mailbox.gather` over every address of `to`, `count` times, one after another."""
    from cuemsg.cueapi import CueClient
    from cuemsg.mailbox import Mailbox

    with CueClient(api_key, base_url) as client, Mailbox.open(client, name) as mb:
        mb.gather(to, body(0), timeout=30)  # warm-up (opens the reply stream)
        ctx.ready()
        start = time.perf_counter()
        latencies: list[float] = []
        short = 0  # gathers that ended without every reply
        while len(latencies) < count and time.perf_counter() - start < deadline:
            t0 = time.perf_counter()
            result = mb.gather(to, body(len(latencies)), timeout=30)
            latencies.append(time.perf_counter() - t0)
            short += len(result.replies) < len(to)
        return {"latencies": latencies, "elapsed": time.perf_counter() - start, "short": short}
