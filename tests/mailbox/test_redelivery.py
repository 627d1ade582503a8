"""A receiver that dies mid-message loses nothing; one that dies after handling does not
handle twice (a dedupe file shared across the restart). Real processes, real crashes."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message, SQLiteDedupe
from cuemsg.testing import RunningServer

DYING = Path(__file__).with_name("_dying_receiver.py")


def crash_a_receiver(
    srv: RunningServer, key: str, dedupe: Path, mode: str, runs: Path, code: int = 3
) -> None:
    proc = subprocess.run(
        [sys.executable, str(DYING), srv.base_url, key, "b", str(dedupe), mode, str(runs)],
        timeout=60,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == code, proc.stderr


@pytest.mark.parametrize("mode", ["mid_handler", "after_handling"])
@pytest.mark.parametrize("kind", ["message", "request"])
def test_redelivery_after_a_receiver_dies(
    short_lease_server: RunningServer, tmp_path: Path, mode: str, kind: str
) -> None:
    srv = short_lease_server
    key = srv.new_key()
    dedupe, runs = tmp_path / "dedupe.db", tmp_path / "runs.log"
    with CueClient(key, srv.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=0.3)
        b_cue = client.cues.get(Mailbox.open(client, "b", poll_wait=0.3).address)
        replies: list[Any] = []
        if kind == "message":
            sent_id = a.send(b_cue.id, "precious").id
            requester = None
        else:
            requester = threading.Thread(
                target=lambda: replies.append(a.request(b_cue.id, "precious", timeout=30))
            )
            requester.start()
            sent_id = None
        crash_a_receiver(srv, key, dedupe, mode, runs)

        survivor = Mailbox.open(
            client, "b", worker_id="survivor", poll_wait=0.3, dedupe=SQLiteDedupe(dedupe)
        )

        def handler(msg: Message[Any]) -> Any:
            with open(runs, "a") as log:
                log.write(f"{msg.id}\n")
            return {"handled": msg.body}

        # The dead receiver's lease runs out within a second; the survivor gets the message.
        survivor.serve(handler, idle_timeout=2.5)
        if requester is not None:
            requester.join(timeout=30)
            assert replies == [{"handled": "precious"}]  # exactly one reply, never lost

        [exe] = client.executions.list(cue_id=b_cue.id).executions
        assert sent_id is None or exe.payload["cuemsg"]["id"] == sent_id
        handled = runs.read_text().split()
        if kind == "request" and mode == "after_handling" and "outcome.reply" in client.extensions:
            # With `outcome.reply` the reply and the ack are one transaction, recorded
            # before the dedupe store: a crash after it leaves nothing to redeliver.
            assert exe.status == "success" and exe.attempts == 1
            assert exe.claimed_by_worker == "doomed" and len(handled) == 1
            assert survivor.stats.duplicates == 0
        else:
            assert exe.status == "success" and exe.attempts == 2
            assert exe.claimed_by_worker == "survivor"
            if mode == "mid_handler":
                assert len(handled) == 2  # the first run never finished: at-least-once
                assert survivor.stats.duplicates == 0
            else:
                assert len(handled) == 1  # finished once: the redelivery is a known duplicate
                assert exe.outcome["result"].startswith("duplicate")
                assert survivor.stats.duplicates == 1
        if kind == "request":
            reply_runs = [
                e
                for e in client.executions.list(cue_id=a.address).executions
                if e.payload and str(e.payload.get("task")).startswith("a.replies.")
            ]
            assert len(reply_runs) == 1  # a resent reply reuses its idempotency key
        for mb in (a, survivor):
            mb.close()


def test_a_receiver_dying_with_a_batch_in_hand_loses_nothing(
    short_lease_server: RunningServer, tmp_path: Path
) -> None:
    srv = short_lease_server
    key = srv.new_key()
    dedupe, runs = tmp_path / "dedupe.db", tmp_path / "runs.log"
    with CueClient(key, srv.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=0.3)
        b_address = Mailbox.open(client, "b", poll_wait=0.3).address
        sent = a.send_many(b_address, [f"m{i}" for i in range(12)])
        crash_a_receiver(srv, key, dedupe, "batch", runs)
        first = runs.read_text().split()
        assert first == [s.id for s in sent[:5]]  # died holding the fifth of a batch of ten

        survivor = Mailbox.open(
            client, "b", worker_id="survivor", poll_wait=0.3, dedupe=SQLiteDedupe(dedupe)
        )
        # The ten leases run out within a second; the survivor gets all of them back (the two
        # never claimed come first: a redelivery does not keep order).
        again = [m.id for m in survivor.receive(wait=2.5, batch=10)]
        # The four acks decided before the crash are known duplicates (acked, not delivered);
        # the message in hand comes back (at-least-once); the rest are delivered once.
        assert sorted(again) == [s.id for s in sent[4:]]
        assert survivor.stats.duplicates == 4 and survivor.stats.acked == 8
        for s in sent:
            exe = client.executions.get(s.execution_id)
            assert exe.status == "success", exe
            assert exe.claimed_by_worker == "survivor"
            assert exe.attempts == (2 if s in sent[:10] else 1)
        for mb in (a, survivor):
            mb.close()


def test_a_receiver_killed_holding_prefetched_messages_loses_nothing(
    short_lease_server: RunningServer, tmp_path: Path
) -> None:
    """The default receive() claims a backlog ahead; a SIGKILL while it holds them
    only delays them by a lease, and what was handled before is not handled again."""
    srv = short_lease_server
    key = srv.new_key()
    dedupe, runs = tmp_path / "dedupe.db", tmp_path / "runs.log"
    with CueClient(key, srv.base_url) as client:
        prefetching = "executions.release" in client.extensions
        a = Mailbox.open(client, "a", poll_wait=0.3)
        b_address = Mailbox.open(client, "b", poll_wait=0.3).address
        sent = a.send_many(b_address, [f"m{i}" for i in range(12)])
        crash_a_receiver(srv, key, dedupe, "prefetch", runs, code=-signal.SIGKILL)
        assert runs.read_text().split() == [s.id for s in sent[:5]]
        held = [client.executions.get(s.execution_id).status for s in sent]
        if prefetching:  # the whole backlog was claimed by the one request
            assert held == ["delivering"] * 12
        survivor = Mailbox.open(
            client, "b", worker_id="survivor", poll_wait=0.3, dedupe=SQLiteDedupe(dedupe)
        )
        again = [m.id for m in survivor.receive(wait=2.5)]
        # The four acks decided before the kill are known duplicates (acked, not delivered);
        # the message in hand and the prefetched ones are delivered (again) once each.
        assert sorted(again) == sorted(s.id for s in sent[4:])
        # The four handled before the kill: acked by the dead receiver (its acks got
        # out before the kill), or acked here as known duplicates, never delivered again.
        by = [client.executions.get(s.execution_id).claimed_by_worker for s in sent]
        assert by[4:] == ["survivor"] * 8
        assert survivor.stats.duplicates == by[:4].count("survivor")
        assert survivor.stats.acked == 8
        assert {client.executions.get(s.execution_id).status for s in sent} == {"success"}
        for mb in (a, survivor):
            mb.close()


def test_a_receiver_killed_between_an_ack_and_the_claim_carrying_it(
    short_lease_server: RunningServer, tmp_path: Path
) -> None:
    """With `claim.settle` a receive loop's ack rides on its next claim; a SIGKILL
    between deciding it and that claim loses nothing and handles nothing twice."""
    srv = short_lease_server
    key = srv.new_key()
    dedupe, runs = tmp_path / "dedupe.db", tmp_path / "runs.log"
    with CueClient(key, srv.base_url) as client:
        a = Mailbox.open(client, "a", poll_wait=0.3)
        b_address = Mailbox.open(client, "b", poll_wait=0.3).address
        sent = [a.send(b_address, body) for body in ("one", "two")]
        crash_a_receiver(srv, key, dedupe, "receive_ack", runs, code=-signal.SIGKILL)
        assert runs.read_text().split() == [sent[0].id]  # handled, ack decided, then killed

        survivor = Mailbox.open(
            client, "b", worker_id="survivor", poll_wait=0.3, dedupe=SQLiteDedupe(dedupe)
        )
        # "one" comes back after its lease and is a known duplicate: acked, not delivered.
        again = [m.id for m in survivor.receive(wait=2.5)]
        assert again == [sent[1].id]
        assert survivor.stats.duplicates == 1 and survivor.stats.acked == 1
        for s in sent:
            exe = client.executions.get(s.execution_id)
            assert exe.status == "success" and exe.claimed_by_worker == "survivor", exe
        assert client.executions.get(sent[0].execution_id).attempts == 2
        for mb in (a, survivor):
            mb.close()
