"""`cuemsg mcp --http`: the same flows over the SDK's streamable HTTP transport, and a kill.

The MCP server is a `python -m cuemsg.mcp --http 127.0.0.1:PORT` subprocess;
the official client connects with `streamable_http_client`.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from cuemsg import CueClient, Mailbox, Message
from cuemsg.testing import RunningServer
from tests.mcp.conftest import (
    LEASE,
    Background,
    address_of,
    call,
    call_error,
    http_agent_process,
    http_session,
    serve_in_thread,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_main_flows_over_streamable_http(srv: RunningServer, client: CueClient) -> None:
    def double(msg: Message[Any]) -> Any:
        return msg.body * 2

    stop = serve_in_thread(client, "doubler", double)
    try:
        with http_agent_process(srv, "carol") as (url, _):
            async with http_session(url) as carol:
                names = {t.name for t in (await carol.list_tools()).tools}
                assert "ask_agent" in names
                # carol asks a Python responder
                assert await call(carol, "ask_agent", to="doubler", body=21) == {"reply": 42}
                # carol writes to herself and reads it back
                await call(carol, "send_message", to="carol", body="note to self")
                got = await call(carol, "check_inbox", wait_seconds=5)
                assert [m["body"] for m in got["messages"]] == ["note to self"]
                # a Python request answered by carol
                carol_address = address_of(client, "carol")
                with Mailbox.open(client, "py-asker") as asker:
                    pending = Background(lambda: asker.request(carol_address, "hi?", timeout=20))
                    [msg] = (await call(carol, "check_inbox", wait_seconds=10))["messages"]
                    await call(carol, "reply", message_id=msg["id"], body="hello")
                    assert pending.result() == "hello"
                text = await call_error(carol, "send_message", to="nobody", body=1)
                assert "no mailbox is named or addressed 'nobody'" in text
    finally:
        stop()


async def test_a_killed_agent_loses_no_request(srv: RunningServer, client: CueClient) -> None:
    with http_agent_process(srv, "dave") as (url, proc):
        dave_address = address_of(client, "dave")
        with Mailbox.open(client, "py-asker") as asker:
            pending = Background(lambda: asker.request(dave_address, "still there?", timeout=30))
            async with http_session(url) as dave:
                [held] = (await call(dave, "check_inbox", wait_seconds=10))["messages"]
                assert held["is_request"]
            proc.kill()  # no goodbye: the held request's lease simply stops being renewed
            proc.wait(10)
            started = time.monotonic()
            # Another receiver on the same mailbox gets it once the lease has run out.
            with Mailbox.open(client, "dave") as again:
                for msg in again.receive(wait=LEASE * 5, limit=1):
                    assert msg.id == held["id"]
                    assert msg.deliveries == 2
                    msg.reply("yes, via another worker")
            assert time.monotonic() - started >= LEASE * 0.5
            assert pending.result() == "yes, via another worker"


async def test_a_session_that_ends_releases_only_its_own_held_requests(
    srv: RunningServer, client: CueClient
) -> None:
    with http_agent_process(srv, "erin") as (url, _):
        erin_address = address_of(client, "erin")
        with Mailbox.open(client, "py-asker") as asker:
            first = Background(lambda: asker.request(erin_address, "first?", timeout=30))
            async with http_session(url) as staying:
                async with http_session(url) as leaving:
                    [gone] = (await call(leaving, "check_inbox", wait_seconds=10))["messages"]
                    second = Background(lambda: asker.request(erin_address, "second?", timeout=30))
                    [kept] = (await call(staying, "check_inbox", wait_seconds=10))["messages"]
                    assert (gone["body"], kept["body"]) == ("first?", "second?")
                    # Each session answers only what it received.
                    text = await call_error(staying, "reply", message_id=gone["id"], body="no")
                    assert "held by another session" in text
                    text = await call_error(staying, "decline", message_id=gone["id"], reason="x")
                    assert "held by another session" in text
                # `leaving` ended (DELETE): its request comes back once its lease runs out.
                with Mailbox.open(client, "erin") as again:
                    seen = []
                    for msg in again.receive(wait=LEASE * 5, limit=1):
                        seen.append((msg.id, msg.deliveries))
                        msg.reply("answered by another worker")
                    assert seen == [(gone["id"], 2)]
                assert first.result() == "answered by another worker"
                # `staying` still holds its request, long past a lease: it can answer it.
                time.sleep(LEASE * 1.5)
                await call(staying, "reply", message_id=kept["id"], body="still mine")
                assert second.result() == "still mine"


async def test_an_idle_session_without_goodbye_releases_its_held_requests(
    srv: RunningServer, client: CueClient
) -> None:
    with http_agent_process(srv, "fred", "--session-ttl", "1") as (url, _):
        fred_address = address_of(client, "fred")
        with Mailbox.open(client, "py-asker") as asker:
            pending = Background(lambda: asker.request(fred_address, "there?", timeout=30))
            async with http_session(url, terminate=False) as vanishing:
                [held] = (await call(vanishing, "check_inbox", wait_seconds=10))["messages"]
            # No DELETE: after 1 s with no request open the session is taken for gone.
            with Mailbox.open(client, "fred") as again:
                seen = []
                for msg in again.receive(wait=LEASE * 5, limit=1):
                    seen.append((msg.id, msg.deliveries))
                    msg.reply("picked up again")
                assert seen == [(held["id"], 2)]
            assert pending.result() == "picked up again"
