"""`cuemsg mcp` over stdio, driven by the official `mcp` client against a real server.

Each MCP agent is a `python -m cuemsg.mcp` subprocess; Python peers use the
public Mailbox API in threads; all of them talk to one embedded server over
loopback HTTP.
"""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import anyio
import pytest

from cuemsg import CueClient, Mailbox, Message, RemoteError
from cuemsg.testing import RunningServer
from tests.mcp.conftest import (
    LEASE,
    Background,
    address_of,
    call,
    call_error,
    serve_in_thread,
    stdio_agent,
)

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

TOOLS = {
    "send_message",
    "check_inbox",
    "reply",
    "decline",
    "ask_agent",
    "list_mailboxes",
    "message_history",
}


async def test_tools_are_listed_with_schemas_and_descriptions(srv: RunningServer) -> None:
    async with stdio_agent(srv, "alice") as alice:
        listed = {t.name: t for t in (await alice.list_tools()).tools}
        assert set(listed) == TOOLS
        for tool in listed.values():
            assert tool.description and len(tool.description) > 150, tool.name
        send = listed["send_message"].input_schema
        assert set(send["required"]) == {"to", "body"}
        assert send["properties"]["ttl_seconds"]["anyOf"][0]["exclusiveMinimum"] == 0
        inbox = listed["check_inbox"].input_schema["properties"]
        assert (inbox["wait_seconds"]["minimum"], inbox["wait_seconds"]["maximum"]) == (0, 30)
        assert (inbox["limit"]["minimum"], inbox["limit"]["maximum"]) == (1, 50)
        ask = listed["ask_agent"].input_schema
        assert "ctx" not in ask["properties"]
        timeout = ask["properties"]["timeout_seconds"]
        assert (timeout["minimum"], timeout["maximum"]) == (1, 600)
        assert listed["decline"].input_schema["required"] == ["message_id", "reason"]
        resources = (await alice.list_resources()).resources
        assert [str(r.uri) for r in resources] == ["mailbox://alice/inbox"]


async def test_two_mcp_agents_exchange_messages(srv: RunningServer) -> None:
    async with stdio_agent(srv, "alice") as alice, stdio_agent(srv, "bob") as bob:
        sent = await call(alice, "send_message", to="bob", body={"task": "draft"}, thread="t1")
        assert sent["to"]["name"] == "bob"
        inbox = await call(bob, "check_inbox", wait_seconds=5)
        [msg] = inbox["messages"]
        assert msg["id"] == sent["message_id"]
        assert msg["body"] == {"task": "draft"}
        assert msg["from"]["name"] == "alice"
        assert msg["thread"] == "t1"
        assert msg["is_request"] is False
        # Bob answers by address this time; the reply lands in alice's inbox.
        await call(bob, "send_message", to=msg["from"]["address"], body="done", thread="t1")
        back = await call(alice, "check_inbox", wait_seconds=5)
        assert [m["body"] for m in back["messages"]] == ["done"]
        assert await call(bob, "check_inbox") == {"messages": [], "held_requests": 0}

        mailboxes = {m["name"]: m for m in (await call(alice, "list_mailboxes"))["mailboxes"]}
        assert mailboxes["alice"]["is_you"] and not mailboxes["bob"]["is_you"]
        assert mailboxes["bob"]["waiting"] == 0

        history = (await call(alice, "message_history", thread="t1"))["messages"]
        assert [(h["direction"], h["body"]) for h in history] == [
            ("in", "done"),
            ("out", {"task": "draft"}),
        ]
        out = history[1]
        assert out["status"] == "success"
        assert out["claimed_by"].startswith("bob@")
        assert "handed to the MCP agent of mailbox 'bob'" in out["outcome"]["result"]


async def test_inbox_resource_counts_waiting_messages(srv: RunningServer) -> None:
    async with stdio_agent(srv, "alice") as alice, stdio_agent(srv, "bob") as bob:
        for n in range(3):
            await call(alice, "send_message", to="bob", body=n)
        read = await bob.read_resource("mailbox://bob/inbox")
        inbox = json.loads(read.contents[0].text)
        assert inbox["waiting"] == 3
        assert len(inbox["oldest"]) == 3
        assert inbox["oldest"][0]["kind"] == "message"
        got = await call(bob, "check_inbox", limit=2)
        assert [m["body"] for m in got["messages"]] == [0, 1]


async def test_ask_agent_is_answered_by_a_python_responder(
    srv: RunningServer, client: CueClient
) -> None:
    def handler(msg: Message[Any]) -> Any:
        time.sleep(1.5)  # long enough for a progress report
        return {"sum": sum(msg.body)}

    stop = serve_in_thread(client, "adder", handler)
    reports: list[float] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        reports.append(progress)

    try:
        async with stdio_agent(srv, "alice") as alice:
            arguments: dict[str, Any] = {"to": "adder", "body": [1, 2, 3], "timeout_seconds": 20}
            result = await alice.call_tool(
                "ask_agent",
                arguments,
                progress_callback=on_progress,
            )
            assert not result.is_error
            assert result.structured_content == {"reply": {"sum": 6}}
            assert reports, "no progress was reported while waiting"
    finally:
        stop()


async def test_python_request_is_answered_by_check_inbox_and_reply(
    srv: RunningServer, client: CueClient
) -> None:
    async with stdio_agent(srv, "bob") as bob:
        bob_address = address_of(client, "bob")
        with Mailbox.open(client, "py-asker") as asker:
            pending = Background(lambda: asker.request(bob_address, {"q": "ping"}, timeout=20))
            inbox = await call(bob, "check_inbox", wait_seconds=10)
            [msg] = inbox["messages"]
            assert msg["is_request"] is True
            assert msg["deadline"] is not None
            assert inbox["held_requests"] == 1
            # Held past its lease: the agent process keeps renewing it meanwhile.
            time.sleep(LEASE * 1.5)
            done = await call(bob, "reply", message_id=msg["id"], body={"a": "pong"})
            assert done["replied_to"] == msg["id"]
            assert pending.result() == {"a": "pong"}
            again = await call_error(bob, "reply", message_id=msg["id"], body="twice")
            assert "already answered" in again


async def test_decline_reaches_the_requester_as_remote_error(
    srv: RunningServer, client: CueClient
) -> None:
    async with stdio_agent(srv, "bob") as bob:
        bob_address = address_of(client, "bob")
        with Mailbox.open(client, "py-asker") as asker:
            pending = Background(lambda: asker.request(bob_address, "delete prod", timeout=20))
            [msg] = (await call(bob, "check_inbox", wait_seconds=10))["messages"]
            empty = await call_error(bob, "decline", message_id=msg["id"], reason="  ")
            assert "give a reason" in empty
            await call(bob, "decline", message_id=msg["id"], reason="not allowed to")
            with pytest.raises(RemoteError) as err:
                pending.result()
            assert (err.value.type, err.value.message) == ("Declined", "not allowed to")


async def test_tool_errors_are_results_with_a_clear_text(srv: RunningServer) -> None:
    async with stdio_agent(srv, "alice") as alice, stdio_agent(srv, "bob") as bob:
        unknown = await call_error(alice, "send_message", to="carol", body="hi")
        assert "no mailbox is named or addressed 'carol'" in unknown
        assert "Mailboxes that exist: alice, bob." in unknown
        assert "carol" in await call_error(alice, "ask_agent", to="carol", body="hi")
        big = await call_error(alice, "send_message", to="bob", body="x" * (1024 * 1024 + 10))
        assert "the body cannot be sent" in big
        bad_limit = await call_error(bob, "check_inbox", limit=51)
        assert "limit" in bad_limit
        not_held = await call_error(bob, "reply", message_id="01NOPE", body=1)
        assert "is not a request held by this agent" in not_held
        # The server still works after every error.
        assert (await call(bob, "check_inbox"))["messages"] == []


async def test_ask_agent_timeout_no_responder(srv: RunningServer, client: CueClient) -> None:
    Mailbox.open(client, "idle").close()  # exists, nobody reads it
    async with stdio_agent(srv, "alice") as alice:
        text = await call_error(alice, "ask_agent", to="idle", body="anyone?", timeout_seconds=1)
        assert "no reply from 'idle' within 1s (no_responder)" in text
        assert "nobody picked the request up" in text


async def test_ask_agent_timeout_dead_responder(srv: RunningServer, client: CueClient) -> None:
    Mailbox.open(client, "crashy").close()

    def claim_and_vanish() -> None:
        # A responder that takes the request and dies: no heartbeat, no outcome.
        got = client.executions.claim_next(worker_id="crashy@gone", task="crashy", wait=10)
        assert got.executions

    async with stdio_agent(srv, "alice") as alice:
        taker = Background(claim_and_vanish)
        text = await call_error(
            alice, "ask_agent", to="crashy", body="hi", timeout_seconds=LEASE * 2
        )
        taker.result()
        assert "(dead_responder)" in text
        assert "stopped" in text


async def test_ask_agent_timeout_slow_responder(srv: RunningServer, client: CueClient) -> None:
    release = threading.Event()

    def slow(msg: Message[Any]) -> str:
        release.wait(10)
        return "late"

    stop = serve_in_thread(client, "slowpoke", slow)
    try:
        async with stdio_agent(srv, "alice") as alice:
            text = await call_error(
                alice, "ask_agent", to="slowpoke", body="hi", timeout_seconds=LEASE
            )
            assert "(slow_responder)" in text
            assert "larger timeout_seconds" in text
    finally:
        release.set()
        stop()


async def test_requests_held_when_the_session_ends_are_delivered_again(
    srv: RunningServer, client: CueClient
) -> None:
    bob_address = address_of(client, "bob")
    with Mailbox.open(client, "py-asker") as asker:
        pending = Background(lambda: asker.request(bob_address, "anyone?", timeout=30))
        async with stdio_agent(srv, "bob") as bob:
            [held] = (await call(bob, "check_inbox", wait_seconds=10))["messages"]
        # The session (and its process) ended without answering: the request is released.
        async with stdio_agent(srv, "bob") as bob:
            [again] = (await call(bob, "check_inbox", wait_seconds=LEASE * 5))["messages"]
            assert again["id"] == held["id"]
            await call(bob, "reply", message_id=again["id"], body="second session")
        assert pending.result() == "second session"


async def test_an_unreachable_cueapi_is_a_tool_error_not_a_crash(srv: RunningServer) -> None:
    async with stdio_agent(srv, "alice") as alice:
        srv.stop()
        text = await call_error(alice, "list_mailboxes")
        assert "the mailbox service failed: TransportError" in text
        with pytest.raises(Exception, match="could not read the inbox"):
            await alice.read_resource("mailbox://alice/inbox")
        # The MCP server is still up: it answers protocol calls.
        assert len((await alice.list_tools()).tools) == len(TOOLS)


async def test_one_mcp_agent_asks_another(srv: RunningServer) -> None:
    async with stdio_agent(srv, "alice") as alice, stdio_agent(srv, "bob") as bob:
        answer: list[Any] = []

        async def ask() -> None:
            answer.append(
                await call(alice, "ask_agent", to="bob", body="word count?", timeout_seconds=20)
            )

        async with anyio.create_task_group() as tg:
            tg.start_soon(ask)
            [msg] = (await call(bob, "check_inbox", wait_seconds=10))["messages"]
            assert (msg["from"]["name"], msg["body"], msg["is_request"]) == (
                "alice",
                "word count?",
                True,
            )
            await call(bob, "reply", message_id=msg["id"], body=412)
        assert answer == [{"reply": 412}]
        [out] = (await call(alice, "message_history", limit=1))["messages"]
        assert out["direction"] == "in" and out["kind"] == "reply" and out["body"] == 412
