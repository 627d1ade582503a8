"""`cuemsg.mcp.agent.Agent` driven directly (no MCP), against the embedded server on loopback.

The paths the MCP layer cannot reach (its schemas refuse the arguments
first) and the ones that need a precise timeline: a held request past its
deadline, a foreign message, name resolution by address and its long lists.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

from cuemsg import AsyncCueClient, CueClient, Mailbox
from cuemsg.mcp import Agent, AgentError
from cuemsg.mcp.resolve import MAX_NAMES_SHOWN
from cuemsg.testing import RunningServer
from tests.mcp.conftest import Background, address_of

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


@pytest.fixture
async def agent(srv: RunningServer) -> AsyncIterator[Agent]:
    async with AsyncCueClient(srv.api_key, srv.base_url) as client, Agent.open(client, "ag") as a:
        yield a


@pytest.mark.parametrize(
    ("call", "text"),
    [
        (lambda a: a.check_inbox(wait_seconds=31), "wait_seconds must be between 0 and 30"),
        (lambda a: a.check_inbox(limit=0), "limit must be between 1 and 50"),
        (lambda a: a.ask_agent("ag", 1, timeout_seconds=0), "timeout_seconds must be between"),
        (lambda a: a.message_history(limit=0), "limit must be between 1 and 200"),
        (lambda a: a.message_history(thread=""), "thread is empty"),
        (lambda a: a.send_message("  ", 1), "`to` is empty"),
        (lambda a: a.decline("x", ""), "give a reason"),
    ],
)
async def test_bad_arguments_are_agent_errors(agent: Agent, call: Any, text: str) -> None:
    with pytest.raises(AgentError, match=text):
        await call(agent)


async def test_a_request_held_past_its_deadline_cannot_be_answered(
    agent: Agent, client: CueClient
) -> None:
    with Mailbox.open(client, "asker") as asker:
        pending = Background(lambda: asker.request(agent.me.address, "quick?", timeout=1.0))
        got = await agent.check_inbox(wait_seconds=10)
        [msg] = got["messages"]
        assert msg["is_request"] and got["held_requests"] == 1
        with pytest.raises(TimeoutError):
            pending.result()
        await anyio.sleep(0.2)
        with pytest.raises(AgentError, match=r"expired at .*the requester has stopped waiting"):
            await agent.reply(msg["id"], "too late")
        assert len(agent.held) == 0


async def test_a_foreign_message_is_handed_over_and_acked(agent: Agent, client: CueClient) -> None:
    # Another program fires the mailbox's cue with a plain payload (no cuemsg envelope).
    client.cues.fire(agent.me.address, {"task": agent.me.task, "message": {"plain": True}})
    [msg] = (await agent.check_inbox(wait_seconds=5))["messages"]
    assert msg["body"] == {"plain": True}
    assert msg["from"] == {"name": None, "address": None}
    assert msg["is_request"] is False
    [record] = await agent.message_history(limit=1)
    assert record["status"] == "success"
    assert record["message_id"] == msg["id"]


async def test_names_and_addresses_resolve_and_unknowns_list_at_most_20(
    agent: Agent, client: CueClient
) -> None:
    addr = address_of(client, "target")
    sent = await agent.send_message(addr, "by address", ttl_seconds=60)
    assert sent["to"] == {"name": "target", "address": addr}
    plain = client.cues.create("not-a-mailbox", transport="worker", payload={})
    with pytest.raises(AgentError, match="no mailbox is named or addressed"):
        await agent.send_message(plain.id, "x")
    for n in range(MAX_NAMES_SHOWN + 3):
        client.cues.create(f"mb{n:02d}", transport="worker", payload={"task": f"mb{n:02d}"})
    with pytest.raises(AgentError) as err:
        await agent.send_message("nobody", "x")
    text = str(err.value)
    assert text.count(", ") == MAX_NAMES_SHOWN - 1
    assert "and 5 more." in text  # 25 mailboxes: ag, target and 23 made here
    # The library's lookup offers close names; the list of those that exist follows.
    with pytest.raises(AgentError) as err:
        await agent.send_message("targte", "x")
    assert "no mailbox is named or addressed 'targte' (did you mean 'target'?)." in str(err.value)
    assert "Mailboxes that exist: ag, mb00," in str(err.value)
    with pytest.raises(AgentError, match="no mailbox is named or addressed 'cue_000000000000'"):
        await agent.send_message("cue_000000000000", "x")


async def test_ask_agent_settled_without_a_reply_says_so_at_once(
    agent: Agent, client: CueClient
) -> None:
    with Mailbox.open(client, "silent") as silent:
        # The loop moves on from the request: it is acked with no reply.
        receiving = Background(lambda: [m.id for m in silent.receive(wait=10, limit=1)])
        with pytest.raises(AgentError, match=r"'silent' settled the request without answering"):
            await agent.ask_agent("silent", {"q": 1}, timeout_seconds=60)
        assert len(receiving.result()) == 1


async def test_thread_history_survives_a_restart_and_shows_each_hand_off(
    srv: RunningServer, client: CueClient
) -> None:
    address_of(client, "quiet")  # a mailbox that never writes back
    async with AsyncCueClient(srv.api_key, srv.base_url) as aclient:
        async with Agent.open(aclient, "ag") as before:
            await before.send_message("quiet", "first", thread="t9")
            await before.send_message("quiet", "elsewhere", thread="t8")
        with Mailbox.open(client, "quiet") as quiet:
            for msg in quiet.receive(wait=5, limit=1):
                msg.ack("read it")
        # A new process knows nothing of what the old one sent: the record still has it.
        async with Agent.open(aclient, "ag") as after:
            await after.send_message("ag", "note", thread="t9")
            history = await after.message_history(thread="t9")
    assert [(h["direction"], h["to"]["name"], h["body"]) for h in history] == [
        ("in", "ag", "note"),  # a note to itself is one message, one record
        ("out", "quiet", "first"),
    ]
    first = history[-1]
    assert first["thread"] == "t9"
    assert first["from"] == {"name": "ag", "address": address_of(client, "ag")}
    assert (first["status"], first["attempts"]) == ("success", 1)
    assert first["claimed_by"].startswith("quiet@")
    assert first["outcome"] == {
        "success": True,
        "result": "read it",
        "error": None,
        "state": "acked",
    }
