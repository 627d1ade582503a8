"""`cuemsg mailbox delete` against a real server (in-process, and once as a subprocess)."""

from __future__ import annotations

from typing import Any

import pytest

from cuemsg import CueClient, Mailbox, MailboxNotFound, NotFound
from cuemsg.testing import RunningServer
from tests.cli.conftest import run_cuemsg, unique


def test_delete_an_empty_mailbox(cli: Any, client: CueClient) -> None:
    box = Mailbox.open(client, unique("empty"))
    run = cli("mailbox", "delete", box.name)
    assert (run.code, run.err) == (0, "")
    assert run.out == f"deleted mailbox {box.name} ({box.address})\n"
    with pytest.raises(NotFound):
        client.cues.get(box.address)


def test_delete_refuses_while_messages_wait_then_force(cli: Any, client: CueClient) -> None:
    box = Mailbox.open(client, unique("busy"))
    sent = Mailbox.open(client, "cli").send_many(box.address, ["one", "two"])

    run = cli("mailbox", "delete", box.name)
    assert run.code == 1 and run.out == ""
    assert f"the mailbox {box.name!r} has 2 message(s) waiting" in run.err
    assert f"cuemsg mailbox delete {box.name} --force" in run.err
    assert client.cues.get(box.address).name == box.name  # still there

    run = cli("mailbox", "delete", box.name, "--force", "--json")
    assert run.code == 0, run.err
    assert run.json() == {"deleted": box.name, "address": box.address, "rejected": 2}
    with pytest.raises(MailboxNotFound):
        Mailbox.lookup(client, box.name)
    for s in sent:
        assert client.executions.get(s.execution_id).status == "failed"


def test_delete_an_unknown_name_lists_near_ones_and_creates_nothing(
    cli: Any, client: CueClient
) -> None:
    box = Mailbox.open(client, unique("spelled"))
    typo = box.name.replace("spelled", "speled")
    run = cli("mailbox", "delete", typo, "--json")
    assert run.code == 1
    error = run.json()
    assert error["type"] == "MailboxNotFound" and error["exit_code"] == 1
    assert f"no mailbox named {typo!r} (did you mean {box.name!r}" in error["error"]
    with pytest.raises(MailboxNotFound):
        Mailbox.lookup(client, typo)


def test_delete_as_a_command(srv: RunningServer, client: CueClient) -> None:
    box = Mailbox.open(client, unique("proc"))
    Mailbox.open(client, "cli").send(box.address, "left")
    done = run_cuemsg("mailbox", "delete", box.name, "--force", srv=srv)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"deleted mailbox {box.name} ({box.address})",
        "1 waiting message(s) rejected: the mailbox was deleted",
    ]
    usage = run_cuemsg("mailbox", srv=srv)
    assert usage.returncode == 2 and "ACTION" in usage.stderr
