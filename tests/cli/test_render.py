"""`inspect` and `tail` on a terminal: rich tables and timelines. The commands run
in a pseudo-terminal (a real TTY for the subprocess); piped output stays plain
(tests/test_cli.py, tests/test_tail_cli.py)."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from rich.console import Console

from cuemsg import CueClient, Mailbox
from cuemsg._inspect import record
from cuemsg.cli._render import render, timeline
from cuemsg.testing import RunningServer, run_server


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server() as server:
        yield server


def in_terminal(srv: RunningServer, key: str, *args: str, timeout: float = 20) -> str:
    """Run `python -m cuemsg ARGS` with a pseudo-terminal as stdout; what it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    env.update(CUEAPI_API_KEY=key, CUEAPI_BASE_URL=srv.base_url, COLUMNS="160", TERM="xterm")
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuemsg", *args],
        stdout=follower,
        stderr=subprocess.PIPE,
        env=env,
    )
    os.close(follower)
    out = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.1)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    os.close(leader)
    assert proc.stderr is not None
    with proc.stderr:
        err = proc.stderr.read()
    assert proc.wait(timeout=10) == 0, err
    return out.decode()


def _dead_letter(srv: RunningServer, key: str) -> tuple[str, str]:
    with (
        CueClient(key, srv.base_url) as client,
        Mailbox.open(client, "r-a") as a,
        Mailbox.open(client, "r-b") as b,
    ):
        ok = a.send(b.address, {"n": 1}, thread="t")
        next(iter(b.receive(wait=5, limit=1))).ack("fine")
        bad = a.send(b.address, {"n": 2})
        next(iter(b.receive(wait=5, limit=1))).reject("no thanks")
    return ok.execution_id, bad.execution_id


def test_inspect_messages_is_a_table_on_a_terminal(srv: RunningServer) -> None:
    key = srv.new_key()
    ok, bad = _dead_letter(srv, key)
    out = in_terminal(srv, key, "inspect", "messages", "r-b")
    assert "\x1b[" in out  # styled
    assert "EXECUTION" in out and "STATUS" in out
    assert ok in out and bad in out
    assert "success" in out and "failed" in out  # the state as a word, not colour alone


def test_tail_is_coloured_on_a_terminal(srv: RunningServer) -> None:
    key = srv.new_key()
    _dead_letter(srv, key)
    out = in_terminal(srv, key, "tail", "--from", "0", "--limit", "6")
    assert "\x1b[" in out
    plain = out.replace("\r", "")
    assert plain.count("fired") == 2 and plain.count("outcome") == 2
    assert "failed: rejected: no thanks" in plain and "success: fine" in plain


def test_a_message_record_draws_its_timeline(srv: RunningServer) -> None:
    key = srv.new_key()
    _, bad = _dead_letter(srv, key)
    with CueClient(key, srv.base_url) as client:
        client.executions.redrive(bad)
        found = record(client, bad)
    steps = [(what, details.plain) for _, what, details in timeline(found["execution"])]
    assert [what for what, _ in steps] == ["sent", "claimed", "outcome", "redriven"]
    assert steps[2][1] == "failed: rejected: no thanks"
    console = Console(record=True, width=140, force_terminal=True)
    assert render(found, console)
    text = console.export_text()
    assert "timeline" in text and "envelope" in text and "body" in text
    assert '"n": 2' in text
    assert "sent again as" in text
    assert not render({"something": "else"}, console)


def test_mailboxes_and_dead_letters_render(srv: RunningServer) -> None:
    key = srv.new_key()
    _dead_letter(srv, key)
    mailboxes = in_terminal(srv, key, "inspect", "mailboxes")
    assert "r-a" in mailboxes and "r-b" in mailboxes and "ADDRESS" in mailboxes
    dead = in_terminal(srv, key, "inspect", "dead-letters")
    assert "1 dead letter(s)" in dead and "rejected: no thanks" in dead
