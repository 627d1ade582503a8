"""Mailbox names: lookup that never creates, names as recipients, the sender's name,
waiting counts and deletion; sync and async, extensions on and off."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import pytest

from cuemsg import (
    AsyncCueClient,
    AsyncMailbox,
    CueClient,
    Mailbox,
    MailboxAddress,
    MailboxError,
    MailboxNotFound,
    NotFound,
)
from cuemsg.mailbox.names import is_address
from tests.mailbox.conftest import POLL, serving

Open = Callable[..., Mailbox]


def cue_names(client: CueClient) -> list[str]:
    return sorted(c.name for c in client.cues.list(limit=1000).cues)


def test_is_address_tells_cue_ids_from_names() -> None:
    assert is_address("cue_abc123def456")
    for name in ("writer", "cue_short", "cue_ABC123DEF456", "cue_abc123def4567", ""):
        assert not is_address(name)


# -- lookup ---------------------------------------------------------------------------------


def test_lookup_finds_by_name_or_address_and_never_creates(
    client: CueClient, mailboxes: Open
) -> None:
    writer = mailboxes("writer", task="drafts")
    before = cue_names(client)
    want = MailboxAddress(name="writer", address=writer.address, task="drafts")
    assert Mailbox.lookup(client, "writer") == want
    assert Mailbox.lookup(client, writer.address) == want
    with pytest.raises(MailboxNotFound) as info:
        Mailbox.lookup(client, "writr")
    err = info.value
    assert isinstance(err, NotFound) and err.status == 404
    assert (err.name, err.near) == ("writr", ["writer"])
    assert "no mailbox named 'writr' (did you mean 'writer'?)" in str(err)
    assert cue_names(client) == before  # nothing was created


def test_lookup_errors(client: CueClient) -> None:
    with pytest.raises(MailboxNotFound) as info:
        Mailbox.lookup(client, "nothing-like-it")
    assert info.value.near == []
    assert "did you mean" not in str(info.value)
    with pytest.raises(NotFound, match="cue_not_found"):
        Mailbox.lookup(client, "cue_000000000000")
    hook = client.cues.create("hook", transport="webhook", callback={"url": "http://x"})
    with pytest.raises(MailboxError, match=r"'hook' \(cue_\w+\) is a webhook cue"):
        Mailbox.lookup(client, "hook")
    with pytest.raises(MailboxError, match="is a webhook cue"):
        Mailbox.lookup(client, hook.id)
    with pytest.raises(ValueError, match="must not be empty"):
        Mailbox.lookup(client, "")


# -- names as recipients ----------------------------------------------------------------------


def test_send_and_request_take_a_name_resolved_once(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    sent = a.send("b", "by name")
    assert sent.cue_id == b.address
    # Renamed behind its back: the name was resolved once, so it still reaches b.
    client.cues.update(b.address, name="b-renamed")
    a.send_many("b", ["one", "two"])
    got = [m.body for m in b.receive(wait=2, limit=3)]
    assert got == ["by name", "one", "two"]
    with serving(b, lambda msg: {"echo": msg.body}):
        assert a.request("b", 7, timeout=30) == {"echo": 7}
    with pytest.raises(MailboxNotFound, match=r"did you mean 'b-renamed'\?"):
        a.send("b-renamd", "typo")


def test_a_name_whose_mailbox_was_deleted_is_looked_up_again(mailboxes: Open) -> None:
    a, old = mailboxes("a"), mailboxes("moving")
    a.send("moving", "first")
    assert [m.body for m in old.receive(wait=2, limit=1)] == ["first"]
    old.delete()
    with pytest.raises(NotFound):
        a.send("moving", "to the old address")
    new = mailboxes("moving")
    assert new.address != old.address
    assert a.send("moving", "second").cue_id == new.address


def test_message_carries_the_senders_name(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("alice"), mailboxes("bob")
    a.send("bob", "hi")
    # An envelope from before sender names (no `sender_name`) still reads.
    old = {"task": b.task, "message": "old", "cuemsg": {"v": 1, "id": "01OLD", "sender": a.address}}
    client.cues.fire(b.address, old, idempotency_key="01OLD")
    got = [(m.body, m.sender, m.sender_name) for m in b.receive(wait=2, limit=2)]
    assert got == [("hi", a.address, "alice"), ("old", a.address, None)]


# -- waiting and delete ---------------------------------------------------------------------


def test_waiting_counts_pending_messages_not_replies(client: CueClient, mailboxes: Open) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    assert b.waiting() == 0
    a.send_many(b.address, [1, 2, 3])
    # A reply waiting on b's cue for one of its requests travels under another task.
    client.cues.fire(b.address, {"task": f"{b.reply_task}", "message": "r"}, idempotency_key="r1")
    assert b.waiting() == 3
    for _ in b.receive(wait=2, limit=1):
        assert b.waiting() == 2  # one is claimed now: no longer waiting
    assert b.waiting() == 2


def test_delete_refuses_while_messages_wait_unless_forced(
    client: CueClient, mailboxes: Open
) -> None:
    a, b = mailboxes("a"), mailboxes("b")
    sent = a.send_many(b.address, ["x", "y"])
    with pytest.raises(MailboxError, match=r"'b' has 2 message\(s\) waiting.*force=True"):
        b.delete()
    assert client.cues.get(b.address).name == "b"  # still there
    assert b.delete(force=True) == 2
    with pytest.raises(NotFound):
        client.cues.get(b.address)
    with pytest.raises(MailboxNotFound):
        Mailbox.lookup(client, "b")
    assert list(b.receive(wait=0.5)) == []  # its loops are stopped
    # What was waiting was rejected, for the record, not left for a later mailbox "b".
    for s in sent:
        record = client.executions.get(s.execution_id)
        assert record.status == "failed" and record.outcome is not None
        assert record.outcome["error"] == "rejected: the mailbox was deleted"
    assert list(mailboxes("b").receive(wait=0.5)) == []
    empty = mailboxes("empty")
    assert empty.delete() == 0


# -- async ----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_async_lookup_names_waiting_and_delete(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "a", poll_wait=POLL) as a,
        AsyncMailbox.open(aclient, "writer", poll_wait=POLL) as w,
    ):
        found = await AsyncMailbox.lookup(aclient, "writer")
        assert found == MailboxAddress(name="writer", address=w.address, task="writer")
        with pytest.raises(MailboxNotFound) as info:
            await AsyncMailbox.lookup(aclient, "writre")
        assert info.value.near == ["writer"]
        with pytest.raises(MailboxNotFound, match="did you mean 'writer'"):
            await a.send("wrter", "typo")

        await a.send("writer", "one")
        await a.send_many("writer", ["two", "three"])
        assert await w.waiting() == 3
        with pytest.raises(MailboxError, match=r"3 message\(s\) waiting"):
            await w.delete()
        got: list[Any] = []
        async for msg in w.receive(wait=2, limit=3):
            got.append((msg.body, msg.sender_name))
        assert got == [("one", "a"), ("two", "a"), ("three", "a")]
        assert await w.waiting() == 0

        async def answer(msg: Any) -> Any:
            return {"echo": msg.body}

        async with anyio.create_task_group() as tg:
            tg.start_soon(w.serve, answer)
            assert await a.request("writer", 5, timeout=30) == {"echo": 5}
            w.stop()
        assert await w.delete() == 0
        with pytest.raises(MailboxNotFound):
            await AsyncMailbox.lookup(aclient, "writer")
