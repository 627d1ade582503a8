"""Topics end to end against the embedded server (extensions on and off), sync and async:
subscriptions kept on the server, wildcards, unsubscribing, a subscriber that restarts,
ordering per publisher and subscriber, one copy (own execution, own record) each.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pytest

from cuemsg._exceptions import MailboxError
from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.mailbox import AsyncMailbox, Mailbox
from cuemsg.signing import SigningKey, generate_key
from tests.mailbox.conftest import POLL

Open = Callable[..., Mailbox]


def bodies(mb: Mailbox, n: int) -> list[tuple[str | None, object]]:
    """The next `n` messages of `mb` as (topic, body), acked."""
    return [(m.topic, m.body) for m in mb.receive(wait=5, limit=n)]


def test_three_subscribers_with_patterns(
    client: CueClient, mailboxes: Open, caplog: pytest.LogCaptureFixture
) -> None:
    pub = mailboxes("publisher")
    exact, star, rest = mailboxes("exact"), mailboxes("star"), mailboxes("rest")
    sub = exact.subscribe("docs.new")
    assert (sub.pattern, sub.address, sub.mailbox) == ("docs.new", exact.address, "exact")
    assert exact.subscribe("docs.new") == sub  # twice is once
    star.subscribe("docs.*")
    rest.subscribe("docs.>")
    rest.subscribe("docs.new")  # overlapping patterns: still one copy per mailbox
    # The subscription is a paused cue of its own: it never fires, it holds no task.
    cue = client.cues.get(sub.cue_id)
    assert cue.status == "paused" and "task" not in cue.payload

    sent = pub.publish("docs.new", {"title": "intro"}, headers={"k": "v"})
    assert sorted(s.cue_id for s in sent) == sorted([exact.address, star.address, rest.address])
    assert len({s.id for s in sent}) == len({s.execution_id for s in sent}) == 3
    assert sorted(s.cue_id for s in pub.publish("docs.old", 2)) == sorted(
        [star.address, rest.address]
    )
    assert [s.cue_id for s in pub.publish("docs.new.pdf", 3)] == [rest.address]
    with caplog.at_level(logging.INFO, logger="cuemsg.mailbox"):
        assert pub.publish("build.failed", 4) == []
    assert "no mailbox subscribes to it" in caplog.text

    [got] = list(exact.receive(wait=5, limit=1))
    assert (got.topic, got.body, got.sender, got.headers) == (
        "docs.new",
        {"title": "intro"},
        pub.address,
        {"k": "v"},
    )
    assert bodies(star, 2) == [("docs.new", {"title": "intro"}), ("docs.old", 2)]
    # Each copy is settled on its own: `rest` rejects its copy, the others stay acked.
    [first, *others] = list(rest.receive(wait=5, limit=3))
    assert [(m.topic, m.body) for m in [first, *others]] == [
        ("docs.new", {"title": "intro"}),
        ("docs.old", 2),
        ("docs.new.pdf", 3),
    ]
    by_cue = {s.cue_id: s for s in sent}
    assert client.executions.get(by_cue[exact.address].execution_id).status == "success"
    exe = client.executions.get(by_cue[rest.address].execution_id)
    assert exe.status == "success" and exe.payload is not None
    assert exe.payload["cuemsg"]["topic"] == "docs.new"  # the record says which topic


def test_unsubscribe_and_a_subscriber_that_restarts(client: CueClient, mailboxes: Open) -> None:
    pub = mailboxes("publisher")
    stays, leaves = mailboxes("stays"), mailboxes("leaves")
    stays.subscribe("jobs.*")
    leaves.subscribe("jobs.*")
    leaves.subscribe("other")
    assert leaves.unsubscribe("jobs.*") is True
    assert leaves.unsubscribe("jobs.*") is False
    assert [s.pattern for s in leaves.subscriptions()] == ["other"]
    assert [s.cue_id for s in pub.publish("jobs.done", 1)] == [stays.address]
    assert list(leaves.receive(wait=POLL, limit=1)) == []

    # `stays` goes away; what is published meanwhile waits on its cue, in order.
    stays.close()
    for n in range(2, 5):
        pub.publish("jobs.done", n)
    again = Mailbox.open(client, "stays", poll_wait=POLL)
    try:
        assert [s.pattern for s in again.subscriptions()] == ["jobs.*"]
        assert [b for _, b in bodies(again, 4)] == [1, 2, 3, 4]
    finally:
        again.close()


def test_order_per_publisher_and_subscriber(mailboxes: Open) -> None:
    p1, p2 = mailboxes("p1"), mailboxes("p2")
    subs = [mailboxes(f"s{i}") for i in range(3)]
    for s in subs:
        s.subscribe("ticks")
    for n in range(5):
        p1.publish("ticks", ["p1", n])
        p2.publish("ticks", ["p2", n])
    for s in subs:
        got = [m.body for m in s.receive(wait=5, limit=10)]
        assert [n for who, n in got if who == "p1"] == list(range(5))
        assert [n for who, n in got if who == "p2"] == list(range(5))


def test_subscribers_racing_lose_no_subscription(client: CueClient, mailboxes: Open) -> None:
    boxes = [mailboxes(f"s{i}") for i in range(6)]
    barrier = threading.Barrier(len(boxes), timeout=20)
    errors: list[BaseException] = []

    def subscribe(mb: Mailbox) -> None:
        try:
            barrier.wait()
            mb.subscribe("events.>")
            mb.subscribe("events.>")  # a repeat racing the others too
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=subscribe, args=(mb,)) for mb in boxes]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    sent = boxes[0].publish("events.x", "hi")
    assert sorted(s.cue_id for s in sent) == sorted(mb.address for mb in boxes)


def test_a_subscriber_whose_mailbox_is_gone_is_skipped(
    client: CueClient, mailboxes: Open, caplog: pytest.LogCaptureFixture
) -> None:
    pub, alive, gone = mailboxes("publisher"), mailboxes("alive"), mailboxes("gone")
    alive.subscribe("news")
    gone.subscribe("news")
    gone.subscribe("other")  # not matching "news", removed all the same
    gone.subscribe(">")
    client.cues.delete(gone.address)
    with caplog.at_level(logging.WARNING, logger="cuemsg.mailbox"):
        sent = pub.publish("news", "extra")
    assert [s.cue_id for s in sent] == [alive.address]
    assert f"subscriber {gone.address} has no mailbox cue any more; skipped" in caplog.text
    assert bodies(alive, 2) == [("news", "extra")]  # one copy, though a batch was retried
    # Its subscriptions went with it: the next publication costs no retry.
    assert [s.address for s in alive.subscriptions()] == [alive.address]
    assert not any(c.name.startswith(f"cuemsg.sub:{gone.address}") for c in client.cues.list().cues)
    assert [s.cue_id for s in pub.publish("news", "more")] == [alive.address]


def test_a_signed_publication_passes_a_subscriber_that_requires_signatures(
    client: CueClient, mailboxes: Open
) -> None:
    signed = mailboxes("signed", signing_key=SigningKey(generate_key()))
    unsigned = mailboxes("unsigned")
    strict = mailboxes("strict", require_signed=True)
    strict.subscribe("alerts")
    [ok] = signed.publish("alerts", "from a known key")
    [refused] = unsigned.publish("alerts", "from nobody we can check")
    assert [(m.topic, m.body) for m in strict.receive(wait=2)] == [("alerts", "from a known key")]
    assert client.executions.get(ok.execution_id).status == "success"
    assert client.executions.get(refused.execution_id).status == "failed"


def test_bad_names_are_refused_before_any_request(mailboxes: Open) -> None:
    mb = mailboxes("m")
    with pytest.raises(ValueError, match="'>' may only be the last token"):
        mb.subscribe("a.>.b")
    with pytest.raises(ValueError, match="contains the wildcard"):
        mb.publish("docs.*", 1)
    with pytest.raises(ValueError, match="empty token"):
        mb.unsubscribe("docs..x")


def test_a_cue_in_the_way_of_a_subscription_is_named(client: CueClient, mailboxes: Open) -> None:
    mb = mailboxes("m")
    name = f"cuemsg.sub:{mb.address}:news"
    taken = client.cues.create(name, transport="worker", payload={"something": "else"})
    with pytest.raises(MailboxError, match=f"{taken.id}\\) exists but is not a subscription"):
        mb.subscribe("news")
    assert mb.subscriptions() == []  # it is not taken for one, nor changed
    assert client.cues.get(taken.id).status == taken.status


@pytest.mark.anyio
async def test_async_publish_subscribe(aclient: AsyncCueClient) -> None:
    async with (
        AsyncMailbox.open(aclient, "pub", poll_wait=POLL) as pub,
        AsyncMailbox.open(aclient, "one", poll_wait=POLL) as one,
        AsyncMailbox.open(aclient, "two", poll_wait=POLL) as two,
    ):
        await one.subscribe("a.*")
        await two.subscribe("a.>")
        sent = await pub.publish("a.b", "first")
        assert sorted(s.cue_id for s in sent) == sorted([one.address, two.address])
        assert [s.cue_id for s in await pub.publish("a.b.c", "second")] == [two.address]
        assert [(m.topic, m.body) async for m in two.receive(wait=1)] == [
            ("a.b", "first"),
            ("a.b.c", "second"),
        ]
        assert await one.unsubscribe("a.*") is True
        assert await one.subscriptions() == []
        assert [s.cue_id for s in await pub.publish("a.b", "third")] == [two.address]
        assert [m.body async for m in one.receive(wait=1)] == ["first"]


def test_deleting_a_mailbox_removes_its_subscriptions(client: CueClient, mailboxes: Open) -> None:
    pub, gone, stays = mailboxes("pub"), mailboxes("gone"), mailboxes("stays")
    cue_id = gone.subscribe("news.*").cue_id
    stays.subscribe("news.*")
    gone.delete()
    names = {c.name for c in client.cues.list(limit=1000).cues}
    assert all(c.id != cue_id for c in client.cues.list(limit=1000).cues), names
    assert [s.cue_id for s in pub.publish("news.today", 1)] == [stays.address]
