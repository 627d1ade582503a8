"""`cuemsg listen`: printing, acking, leaving requests for `reply`, --exec, signals."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from typing import Any

from cuemsg import CueClient, Mailbox
from cuemsg.testing import RunningServer
from tests.cli.conftest import subprocess_env, unique

# -- listen --------------------------------------------------------------------------------


def test_listen_prints_and_acks(cli: Any, client: CueClient) -> None:
    inbox = Mailbox.open(client, unique("listen"))
    sender = Mailbox.open(client, unique("talker"))
    sent = [sender.send(inbox.address, {"n": n}, thread="t") for n in range(3)]

    run = cli("listen", inbox.name, "--limit", "2", "--json")
    assert run.code == 0, run.err
    got = [json.loads(line) for line in run.out.splitlines()]
    assert [m["body"] for m in got] == [{"n": 0}, {"n": 1}]
    assert [m["id"] for m in got] == [s.id for s in sent[:2]]
    first = got[0]
    assert first["execution_id"] == sent[0].execution_id
    assert (first["sender"], first["sender_name"]) == (sender.address, sender.name)
    assert (first["kind"], first["thread"]) == ("message", "t")
    assert run.err.startswith(f"listening on {inbox.name} ({inbox.address}")
    assert run.err.endswith("received 2 message(s)\n")

    run = cli("listen", inbox.name, "--wait", "0.3")
    assert run.code == 0, run.err
    assert run.out == f'{sent[2].id} from {sender.name} [thread t]: {{"n": 2}}\n'
    assert run.err.endswith("received 1 message(s)\n")

    for s in sent:
        exe = client.executions.get(s.execution_id)
        assert exe.status == "success"
        assert (exe.outcome or {})["result"].startswith("received by cuemsg listen")


def test_listen_stops_when_idle(cli: Any) -> None:
    run = cli("listen", unique("empty"), "--wait", "0.2", "--json")
    assert (run.code, run.out) == (0, "")
    assert run.err.endswith("received 0 message(s)\n")


def test_listen_ctrl_c_stops_cleanly(srv: RunningServer, client: CueClient) -> None:
    name = unique("ctrlc")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuemsg", "listen", name],
        env=subprocess_env(srv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None and proc.stdout is not None
        banner = proc.stderr.readline()
        assert banner.startswith(f"listening on {name} ("), banner
        inbox = Mailbox.open(client, name)
        sent = Mailbox.open(client, unique("talker")).send(inbox.address, "wake up")
        line = proc.stdout.readline()
        assert line.startswith(f"{sent.id} from talker-"), line
        assert line.endswith(': "wake up"\n')
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert err == "cuemsg: interrupted: received 1 message(s)\n"
    assert client.executions.get(sent.execution_id).status == "success"
