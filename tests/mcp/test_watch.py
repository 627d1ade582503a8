"""New mail while no `check_inbox` runs: `notifications/resources/updated` on a listen stream.

The official high-level client (`mcp.Client`, protocol 2026-07-28) spawns
`python -m cuemsg.mcp` and listens on `mailbox://NAME/inbox`.
"""

from __future__ import annotations

import logging
import sys

import anyio
import pytest
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.server.subscriptions import ResourceUpdated, ServerEvent

from cuemsg import CueClient, Mailbox, TransportError
from cuemsg.mcp.watch import InboxWatch
from cuemsg.testing import RunningServer
from tests.mcp.conftest import agent_command, agent_env, http_agent_process

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]


async def test_a_listener_hears_of_new_mail_and_check_inbox_reads_it(
    srv: RunningServer, client: CueClient
) -> None:
    params = StdioServerParameters(
        command=sys.executable, args=agent_command("lis"), env=agent_env(srv)
    )
    async with Client(params, read_timeout_seconds=30) as agent:
        uri = "mailbox://lis/inbox"
        async with agent.listen(resource_subscriptions=[uri]) as events:
            assert events.honored.resource_subscriptions == [uri]
            with Mailbox.open(client, "writer") as writer:
                writer.send("lis", "hello")
            with anyio.fail_after(15):
                event = await anext(aiter(events))
            assert event == ResourceUpdated(uri=uri)
        got = (await agent.call_tool("check_inbox", {})).structured_content
        assert got is not None
        assert [m["body"] for m in got["messages"]] == ["hello"]


async def test_counts_only_while_listened_to_and_quiet_while_reading(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The count is a scripted sequence here, and its first call fails as an unreachable
    # service would: the rule (when to publish) is what is under test.
    script: list[int | Exception] = [TransportError("down"), 2, 2, 3, 5, 1]
    heard: list[ServerEvent] = []
    calls = 0
    reading_at = 5  # the fifth count happens during a check_inbox

    watch = InboxWatch("mailbox://m/inbox", interval=0.01)
    reading = watch.reading()

    async def count() -> int:
        nonlocal calls
        calls += 1
        if calls == reading_at:
            reading.__enter__()
        if calls == reading_at + 1:
            reading.__exit__(None, None, None)
        step = script.pop(0) if script else 1
        if isinstance(step, Exception):
            raise step
        return step

    with caplog.at_level(logging.WARNING, logger="cuemsg.mcp"):
        async with anyio.create_task_group() as tg:
            tg.start_soon(watch.watch_forever, count)
            await anyio.sleep(0.05)
            assert calls == 0  # nobody listens: nothing is counted
            stop = watch.subscribe(heard.append)
            with anyio.fail_after(5):
                while len(heard) < 3:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.05)  # and nothing more: the counts stay at 1
            stop()
            stop()  # idempotent
            tg.cancel_scope.cancel()
    assert "could not count the waiting messages: down" in caplog.text
    # 2 (mail waiting when the first listener came), then 3; 5 came during a read;
    # after the read, 1 still waiting is news again.
    assert heard == [ResourceUpdated(uri="mailbox://m/inbox")] * 3


async def test_a_listener_over_streamable_http_hears_of_new_mail(
    srv: RunningServer, client: CueClient
) -> None:
    with http_agent_process(srv, "lis2") as (url, _):
        async with Client(url, read_timeout_seconds=30) as agent:
            uri = "mailbox://lis2/inbox"
            async with agent.listen(resource_subscriptions=[uri]) as events:
                with Mailbox.open(client, "writer") as writer:
                    writer.send("lis2", "over http")
                with anyio.fail_after(15):
                    event = await anext(aiter(events))
                assert event == ResourceUpdated(uri=uri)
