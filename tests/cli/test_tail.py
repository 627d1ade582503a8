"""`cuemsg tail` and `cuemsg redrive` end to end: `python -m cuemsg` subprocesses
against a real server on loopback, each test with its own tenant."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import pytest

from cuemsg import CueClient, Mailbox
from cuemsg._inspect import CommandError
from cuemsg.cli.tail import event_line, parse_since
from cuemsg.testing import RunningServer, run_server


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(sweep_interval=0.05) as server:
        yield server


@pytest.fixture
def key(srv: RunningServer) -> str:
    return srv.new_key()


def cuemsg(
    srv: RunningServer, key: str, *args: str, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    env.update(CUEAPI_API_KEY=key, CUEAPI_BASE_URL=srv.base_url)
    return subprocess.run(
        [sys.executable, "-m", "cuemsg", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def dead_letter(srv: RunningServer, key: str, inbox: str, body: Any = "bad") -> tuple[str, str]:
    """A message `inbox` rejected: (its execution id, its message id)."""
    with (
        CueClient(key, srv.base_url) as client,
        Mailbox.open(client, "sender") as a,
        Mailbox.open(client, inbox) as b,
    ):
        sent = a.send(b.address, body)
        msg = next(iter(b.receive(wait=5, limit=1)))
        msg.reject("cannot handle it")
    return sent.execution_id, sent.id


def test_tail_json_prints_each_event_of_a_hand_off(srv: RunningServer, key: str) -> None:
    with (
        CueClient(key, srv.base_url) as client,
        Mailbox.open(client, "t-a") as a,
        Mailbox.open(client, "t-b") as b,
    ):
        sent = a.send(b.address, {"x": 1}, thread="th")
        next(iter(b.receive(wait=5, limit=1))).ack("ok")
    done = cuemsg(srv, key, "tail", "t-b", "--json", "--from", "0", "--limit", "3")
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert [e["type"] for e in events] == ["fired", "claimed", "outcome"]
    assert {e["message_id"] for e in events} == {sent.id}
    assert events[2]["result"] == "ok"


def test_tail_follows_live_and_prints_plain_lines_when_piped(srv: RunningServer, key: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    env.update(CUEAPI_API_KEY=key, CUEAPI_BASE_URL=srv.base_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuemsg", "tail", "--limit", "3"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        # It starts from now: wait until it says it follows.
        assert proc.stderr is not None
        assert proc.stderr.readline().startswith("cuemsg tail: every mailbox, after event ")
        _, message_id = dead_letter(srv, key, "live")
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    lines = out.splitlines()
    assert len(lines) == 3
    assert "\x1b[" not in out  # no colour codes into a pipe
    assert lines[0].split()[1] == "fired" and message_id in lines[0]
    assert "from sender" in lines[0]
    assert lines[2].split()[1] == "outcome"
    assert "failed: rejected: cannot handle it" in lines[2]


def test_tail_thread_filter(srv: RunningServer, key: str) -> None:
    with (
        CueClient(key, srv.base_url) as client,
        Mailbox.open(client, "f-a") as a,
        Mailbox.open(client, "f-b") as b,
    ):
        a.send(b.address, 1, thread="one")
        wanted = a.send(b.address, 2, thread="two")
    done = cuemsg(srv, key, "tail", "--thread", "two", "--json", "--from", "0", "--limit", "1")
    assert done.returncode == 0, done.stderr
    [event] = [json.loads(line) for line in done.stdout.splitlines()]
    assert event["message_id"] == wanted.id and event["thread"] == "two"


def test_tail_of_an_unknown_mailbox_is_a_clear_error(srv: RunningServer, key: str) -> None:
    done = cuemsg(srv, key, "tail", "nobody-here")
    assert done.returncode == 1
    assert done.stderr.startswith("cuemsg: no mailbox named 'nobody-here'")


def test_tail_without_the_feed_says_so() -> None:
    with run_server(extensions=False) as plain:
        done = cuemsg(plain, plain.api_key, "tail", "--limit", "1", timeout=20)
    assert done.returncode == 1
    assert "events.stream" in done.stderr and "Traceback" not in done.stderr


def test_redrive_twice_and_dry_run(srv: RunningServer, key: str) -> None:
    dead, message_id = dead_letter(srv, key, "rd")
    dry = cuemsg(srv, key, "redrive", "--mailbox", "rd", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.strip() == f"would redrive {dead} (dry run)"
    with CueClient(key, srv.base_url) as client:
        assert client.executions.get(dead).redriven_to is None  # nothing sent
    first = cuemsg(srv, key, "redrive", dead)
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith(f"redriven {dead} -> ")
    new = first.stdout.split()[-1]
    again = cuemsg(srv, key, "redrive", dead, "--json")
    assert again.returncode == 0, again.stderr
    [row] = json.loads(again.stdout)["redrives"]
    assert row == {"execution_id": dead, "redriven_to": new, "result": "already"}
    # The new execution carries the same message, linked to the dead one, and is delivered.
    with CueClient(key, srv.base_url) as client:
        assert client.executions.get(dead).redriven_to == new
        fresh = client.executions.get(new)
        assert fresh.redrive_of == dead
        assert fresh.payload is not None
        meta = fresh.payload["cuemsg"]
        assert meta["id"] == message_id and meta["redrive_of"] == dead
        with Mailbox.open(client, "rd") as rd:
            msg = next(iter(rd.receive(wait=5, limit=1)))
            assert msg.execution_id == new and msg.body == "bad"
            msg.ack()
    # Nothing left to redrive in the mailbox.
    rest = cuemsg(srv, key, "redrive", "--mailbox", "rd")
    assert (rest.returncode, rest.stdout.strip()) == (0, "no dead letters to redrive")


def test_redrive_mailbox_since(srv: RunningServer, key: str) -> None:
    dead, _ = dead_letter(srv, key, "since")
    old = cuemsg(srv, key, "redrive", "--mailbox", "since", "--since", "2099-01-01T00:00:00Z")
    assert (old.returncode, old.stdout.strip()) == (0, "no dead letters to redrive")
    recent = cuemsg(srv, key, "redrive", "--mailbox", "since", "--since", "1h", "--json")
    assert recent.returncode == 0, recent.stderr
    [row] = json.loads(recent.stdout)["redrives"]
    assert (row["execution_id"], row["result"]) == (dead, "redriven")


def test_redrive_of_what_is_not_a_dead_letter(srv: RunningServer, key: str) -> None:
    with (
        CueClient(key, srv.base_url) as client,
        Mailbox.open(client, "ok-a") as a,
        Mailbox.open(client, "ok-b") as b,
    ):
        sent = a.send(b.address, 1)
        next(iter(b.receive(wait=5, limit=1))).ack()
    done = cuemsg(srv, key, "redrive", sent.execution_id)
    assert done.returncode == 1
    assert done.stderr.strip() == (
        f"cuemsg: execution {sent.execution_id!r} is success, not a dead letter (failed): "
        "nothing to redrive"
    )
    dry = cuemsg(srv, key, "redrive", sent.execution_id, "--dry-run")
    assert dry.returncode == 1 and "not a dead letter" in dry.stderr
    missing = cuemsg(srv, key, "redrive", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 1 and "404 execution_not_found" in missing.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "give EXECUTION_ID... or --mailbox NAME"),
        (("x", "--mailbox", "m"), "give EXECUTION_ID... or --mailbox NAME"),
        (("x", "--since", "1h"), "--since goes with --mailbox"),
        (("--mailbox", "rd", "--since", "yesterday"), "--since 'yesterday'"),
    ],
)
def test_redrive_usage_errors(
    srv: RunningServer, key: str, args: tuple[str, ...], needle: str
) -> None:
    done = cuemsg(srv, key, "redrive", *args)
    assert done.returncode == 2
    assert needle in done.stderr


def test_redrive_needs_the_extension() -> None:
    with run_server(extensions=False) as plain:
        done = cuemsg(plain, plain.api_key, "redrive", "x", timeout=20)
    assert done.returncode == 1
    assert "no executions.redrive extension" in done.stderr


def test_parse_since() -> None:
    now = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
    assert parse_since("90m", now) == datetime(2026, 12, 1, 1, 30, tzinfo=timezone.utc)
    assert parse_since("2026-11-30T00:00:00", now) == datetime(2026, 11, 30, tzinfo=timezone.utc)
    with pytest.raises(CommandError, match="ISO 8601"):
        parse_since("soon", now)


def test_event_line_reads_as_text() -> None:
    data = {
        "type": "outcome",
        "at": "2026-12-01T03:10:00.120000+00:00",
        "execution_id": "e1",
        "cue_id": "cue_x",
        "cue_name": "planner",
        "message_id": "m1",
        "kind": "request",
        "sender": "cue_y",
        "thread": None,
        "worker_id": "w",
        "attempt": 2,
        "success": True,
        "result": "ok",
    }
    line = event_line(data)
    assert line.split()[:3] == ["03:10:00.120", "outcome", "planner"]
    assert "request m1" in line and "from cue_y" in line and "by w (attempt 2)" in line
    assert line.endswith("success: ok")
