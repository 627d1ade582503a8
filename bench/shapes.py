"""cuemsg in the brokers' shapes: separate processes for a fixed time, and the async cycle.

The timed shape runs a sender and a receiver process for the same number of
seconds, as the durable peers' rows do (`bench.peers.durable_row`): the
receiver's consumed rate, the sender's rate and the backlog left when both
stop. The async cycle is row 2a through `AsyncMailbox` (what T9 compares with
the sync Mailbox's client CPU).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench import roles
from bench.drivers import body, driver_label
from bench.procs import Role, RoleContext, ServerProc
from bench.report import Row, percentile
from bench.rows import measured, open_inboxes, with_cpu

#: A count no timed run reaches: the roles stop on time.
UNBOUNDED = 10**9


def timed(
    server: ServerProc, *, key: str, seconds: float, label: str = "", batch: int | None = None
) -> Row:
    """One Mailbox sender and one Mailbox receiver process on one inbox for `seconds`.

    `batch`: the receiver's `receive(prefetch=)`, claims of up to that many when a
    backlog is there and their acks recorded together (a broker's prefetch); None:
    its default.
    """
    name = f"timed-{key}"
    [inbox] = open_inboxes("mailbox", server, [f"{name}-in"], True)
    common = dict(
        kind="mailbox", base_url=server.base_url, api_key=server.api_key, count=UNBOUNDED,
        deadline=seconds,
    )  # fmt: skip
    role_list = [
        Role(roles.receiver, dict(name=f"{name}-in", batch=batch, **common)),
        Role(roles.sender, dict(name=f"{name}-out", to=inbox, **common)),
    ]
    results, counter = measured([server], role_list, seconds + 30)
    recv, send = results
    got, sent = recv["received"], send["sent"]
    span = send["t_end"] - send["t_start"]
    backlog = sent - got
    row = Row(
        key,
        f"one-way, sender and receiver processes for {seconds:g} s, consumed{label}",
        got / span if span > 0 else None,
        "msg/s",
        percentile(recv["latencies"], 50),
        percentile(recv["latencies"], 99),
        counter.count / got if got else None,
        f"{sent / span:,.0f}/s sent, backlog {backlog:,} at the end; {driver_label('mailbox')}"
        + (f", receive(batch={batch})" if batch is not None else ", receive() (prefetch)"),
        extra={"sent": sent, "backlog": backlog},
    )
    return with_cpu(row, counter, results, got)


def async_cycle_role(
    ctx: RoleContext, *, base_url: str, api_key: str, name: str, count: int, deadline: float
) -> dict[str, Any]:
    """Row 2a's loop through `AsyncMailbox`: send to itself, receive, ack, one at a time.

    The ack is left to the loop, as `MailboxDriver` leaves it (the documented
    default): a message left unsettled is acked when the loop moves on, and
    with `claim.settle` that ack rides on the next claim (two requests a message).
    """
    from cuemsg import AsyncCueClient, AsyncMailbox

    async def main() -> dict[str, Any]:
        async with AsyncCueClient(api_key, base_url) as client:
            await client.load_extensions()
            async with AsyncMailbox.open(client, name) as mailbox:
                # One long-lived receive loop, as the sync driver keeps one iterator.
                messages = mailbox.receive(wait=5.0)

                async def one(seq: int) -> None:
                    await mailbox.send(mailbox.address, body(seq))
                    try:
                        msg = await anext(messages)
                    except StopAsyncIteration:
                        raise RuntimeError(
                            "a message sent to itself did not arrive in 5 s"
                        ) from None
                    del msg  # acked by the loop when it moves on (on the next claim)

                for i in range(5):  # warm-up
                    await one(i)
                ctx.ready()
                lat: list[float] = []
                start = time.perf_counter()
                while len(lat) < count and time.perf_counter() - start < deadline:
                    t0 = time.perf_counter()
                    await one(len(lat))
                    lat.append(time.perf_counter() - t0)
                elapsed = time.perf_counter() - start
                await messages.aclose()
                return {"latencies": lat, "elapsed": elapsed}

    return asyncio.run(main())


def async_cycle(server: ServerProc, *, key: str, count: int, deadline: float) -> Row:
    """Row 2a with `AsyncMailbox` in place of the sync Mailbox."""
    open_inboxes("mailbox", server, ["bench-acycle"], True)
    role = Role(
        async_cycle_role,
        dict(base_url=server.base_url, api_key=server.api_key, name="bench-acycle",
             count=count, deadline=deadline),
    )  # fmt: skip
    results, counter = measured([server], [role], deadline + 30)
    lat = results[0]["latencies"]
    row = Row(
        key,
        "one-way cycle: 1 client, send -> receive -> ack, one at a time, AsyncMailbox",
        len(lat) / results[0]["elapsed"] if lat else None,
        "msg/s",
        percentile(lat, 50),
        percentile(lat, 99),
        counter.count / len(lat) if lat else None,
        "AsyncMailbox (asyncio), one receive() loop",
    )
    return with_cpu(row, counter, results, len(lat))
