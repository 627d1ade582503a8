"""`cuemsg inspect` against a real server."""

from __future__ import annotations

import json
from typing import Any

from cuemsg import CueClient, Mailbox
from tests.cli.conftest import unique

# -- inspect -------------------------------------------------------------------------------


def test_inspect_mailboxes(cli: Any, client: CueClient) -> None:
    box = Mailbox.open(client, unique("listed"))
    Mailbox.open(client, "cli").send(box.address, "one")
    hook = client.cues.create(unique("hook"), transport="webhook", callback={"url": "http://x"})

    run = cli("inspect", "mailboxes", "--json")
    assert run.code == 0, run.err
    rows = {r["name"]: r for r in run.json()["mailboxes"]}
    assert rows[box.name] == {
        "name": box.name,
        "address": box.address,
        "task": box.task,
        "fired_count": 1,
        "waiting": 1,
        "status": "paused",
        "created_at": rows[box.name]["created_at"],
    }
    assert hook.name not in rows

    run = cli("inspect", "mailboxes")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "TASK", "WAITING", "FIRED"]
    assert [box.name, box.address, box.task, "1", "1"] in [line.split() for line in lines]
    assert lines[-2].startswith("WAITING: messages sent and not yet claimed.")
    assert lines[-1].startswith('Status: every mailbox is "paused" on purpose')

    for msg in box.receive(wait=2, limit=1):
        msg.ack()
    rows = {r["name"]: r for r in cli("inspect", "mailboxes", "--json").json()["mailboxes"]}
    assert (rows[box.name]["waiting"], rows[box.name]["fired_count"]) == (0, 1)


def test_inspect_messages(cli: Any, client: CueClient) -> None:
    box = Mailbox.open(client, unique("msgs"), poll_wait=0.2)
    sender = Mailbox.open(client, unique("from"))
    first = sender.send(box.address, "handled")
    for msg in box.receive(wait=0.5, limit=1):
        msg.ack("done with it")
    second = sender.send(box.address, "waiting")

    run = cli("inspect", "messages", box.name, "--json")
    assert run.code == 0, run.err
    answer = run.json()
    assert answer["mailbox"]["address"] == box.address
    rows = answer["messages"]
    assert [r["execution_id"] for r in rows] == [second.execution_id, first.execution_id]
    done = rows[1]
    assert done["message_id"] == first.id
    assert (done["kind"], done["status"], done["attempts"]) == ("message", "success", 1)
    assert (done["sender"], done["sender_name"]) == (sender.address, sender.name)
    assert done["claimed_by"] == box.worker_id
    assert done["summary"] == "done with it"
    assert done["outcome"]["success"] is True
    assert (rows[0]["status"], rows[0]["summary"], rows[0]["outcome"]) == ("pending", "-", None)

    run = cli("inspect", "messages", box.address, "--status", "pending", "--json")
    assert [r["execution_id"] for r in run.json()["messages"]] == [second.execution_id]
    run = cli("inspect", "messages", box.name, "--limit", "1", "--json")
    assert [r["execution_id"] for r in run.json()["messages"]] == [second.execution_id]

    run = cli("inspect", "messages", box.name)
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"mailbox {box.name} ({box.address}): 2 message(s), newest first"
    assert lines[1].split() == [
        "EXECUTION", "KIND", "SENDER", "STATUS", "ATTEMPTS", "CLAIMED", "BY", "OUTCOME"
    ]  # fmt: skip
    pending = [second.execution_id, "message", sender.name, "pending", "0", "-", "-"]
    handled = [first.execution_id, "message", sender.name, "success", "1", box.worker_id]
    assert lines[2].split() == pending
    assert lines[3].split() == [*handled, "done", "with", "it"]


def test_inspect_messages_of_an_unknown_mailbox(cli: Any) -> None:
    run = cli("inspect", "messages", "no-such-box")
    assert run.code == 1
    assert run.err.startswith("cuemsg: no mailbox named 'no-such-box'")


def test_inspect_dead_letters(cli: Any, client: CueClient) -> None:
    box = Mailbox.open(client, unique("dead"), poll_wait=0.2)
    sender = Mailbox.open(client, unique("from"))
    sent = sender.send(box.address, "%%% garbled")
    for msg in box.receive(wait=0.5, limit=1):
        msg.reject("unreadable instructions")

    run = cli("inspect", "dead-letters", box.name, "--json")
    assert run.code == 0, run.err
    [row] = run.json()["dead_letters"]
    assert row["execution_id"] == sent.execution_id
    assert (row["status"], row["mailbox"], row["sender_name"]) == ("failed", box.name, sender.name)
    assert row["summary"] == "rejected: unreadable instructions"

    run = cli("inspect", "dead-letters", box.name)
    assert run.out.splitlines() == [
        f"1 dead letter(s) in {box.name} ({box.address}), newest first",
        f"{sent.execution_id}  message {sent.id} to {box.name} from {sender.name}, 1 attempt(s), "
        f"{row['created_at']}",
        "  error: rejected: unreadable instructions",
    ]

    run = cli("inspect", "dead-letters", "--json")
    assert sent.execution_id in [r["execution_id"] for r in run.json()["dead_letters"]]
    run = cli("inspect", "dead-letters", unique("clean"))
    assert run.code == 1 and "no mailbox named" in run.err


def _request_execution(client: CueClient, cue_id: str, body: Any) -> str:
    for exe in client.executions.list(cue_id=cue_id, limit=100).executions:
        if (exe.payload or {}).get("message") == body:
            return exe.id
    raise AssertionError(f"no execution with {body!r}")


def test_inspect_message_follows_a_requests_reply(
    cli: Any, client: CueClient, calc: Mailbox
) -> None:
    asker = unique("asker")
    body = {"a": 20, "b": 22}
    assert cli("request", "calc", json.dumps(body), "--from", asker).code == 0
    request_id = _request_execution(client, calc.address, body)

    run = cli("inspect", "message", request_id, "--json")
    assert run.code == 0, run.err
    found = run.json()
    assert found["execution"] == client.executions.get(request_id).raw
    assert found["envelope"]["kind"] == "request"
    assert found["body"] == body
    reply_id = found["execution"]["outcome"]["metadata"]["cuemsg"]["reply_execution_id"]
    assert found["reply_execution_id"] == reply_id
    reply = found["reply"]
    assert reply["execution"]["id"] == reply_id
    assert reply["envelope"]["kind"] == "reply"
    assert reply["envelope"]["correlation_id"] == found["envelope"]["id"]
    assert reply["body"] == 42
    assert reply["execution"]["outcome"]["metadata"]["cuemsg"]["state"] == "delivered"

    run = cli("inspect", "message", request_id)
    assert run.code == 0, run.err
    text = run.out
    asker_address = Mailbox.open(client, asker).address
    assert text.startswith(
        f"request {found['envelope']['id']}: from {asker_address} ({asker}) "
        f"to {calc.address} (calc), success\n"
    )
    for section in ("envelope", "body", "execution", "outcome"):
        assert f"\n{section}\n" in text
    for field in found["execution"]:
        if field not in ("payload", "outcome"):
            assert f"\n  {field} " in text
    assert f"\nreply: execution {reply_id}, named by the outcome\n" in text
    assert f"\n  reply {reply['envelope']['id']}: from {calc.address} (calc)" in text
    assert "reply delivered to the waiting request" in text


def test_inspect_message_without_a_reply(cli: Any, client: CueClient) -> None:
    box = Mailbox.open(client, unique("plain"))
    sent = Mailbox.open(client, unique("from")).send(box.address, {"k": "v"}, thread="th")
    found = cli("inspect", "message", sent.execution_id, "--json").json()
    assert (found["reply"], found["reply_execution_id"]) == (None, None)
    assert found["envelope"]["thread"] == "th"
    run = cli("inspect", "message", sent.execution_id)
    assert "\nreply:" not in run.out
    assert '\nbody\n  {\n    "k": "v"\n  }\n' in run.out


def test_inspect_message_bad_execution_id(cli: Any) -> None:
    run = cli("inspect", "message", "not-an-execution")
    assert run.code == 1
    assert run.err == "cuemsg: 404 execution_not_found: execution 'not-an-execution' not found\n"
