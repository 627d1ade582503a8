"""The client commands of the CLI (send, request, listen, inspect) against a real server.

One embedded server over loopback for the module; each test uses its own
mailbox names. Most tests call `cuemsg.cli.main([...])` in-process with the
env vars set; a few run `python -m cuemsg` as a subprocess (env reading in a
fresh process, Ctrl-C, no traceback).
"""

from __future__ import annotations

import io
import itertools
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cuemsg import CueClient, Mailbox, Message
from cuemsg.cli import main
from cuemsg.testing import RunningServer, free_port, run_server

NO_KEY = "cuemsg: no CueAPI key: set CUEAPI_API_KEY or pass --api-key\n"
_names = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}-{next(_names)}"


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server() as server:
        yield server


@pytest.fixture(scope="module")
def client(srv: RunningServer) -> Iterator[CueClient]:
    with CueClient(srv.api_key, srv.base_url) as c:
        yield c


@pytest.fixture(autouse=True)
def _env(srv: RunningServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUEAPI_API_KEY", srv.api_key)
    monkeypatch.setenv("CUEAPI_BASE_URL", srv.base_url)


def _calc(msg: Message[Any]) -> Any:
    if msg.body == "boom":
        raise ValueError("cannot add a boom")
    return msg.body["a"] + msg.body["b"]


@pytest.fixture(scope="module")
def calc(client: CueClient) -> Iterator[Mailbox]:
    """A mailbox `calc` served in a thread: adds a + b, raises ValueError on "boom"."""
    mb = Mailbox.open(client, "calc", poll_wait=0.2)
    serving = threading.Thread(target=mb.serve, args=(_calc,))
    serving.start()
    yield mb
    mb.stop()
    serving.join()
    mb.close()


class Run:
    def __init__(self, code: int, out: str, err: str) -> None:
        self.code, self.out, self.err = code, out, err

    def json(self) -> Any:
        return json.loads(self.out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Any:
    def run(*argv: str) -> Run:
        capsys.readouterr()
        code = main(list(argv))
        captured = capsys.readouterr()
        return Run(code, captured.out, captured.err)

    return run


def subprocess_env(srv: RunningServer | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    if srv is not None:
        env.update(CUEAPI_API_KEY=srv.api_key, CUEAPI_BASE_URL=srv.base_url)
    return env


def run_cuemsg(*argv: str, srv: RunningServer | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cuemsg", *argv],
        env=subprocess_env(srv),
        capture_output=True,
        text=True,
        timeout=60,
    )


def payload_of(client: CueClient, execution_id: str) -> dict[str, Any]:
    return client.executions.get(execution_id).payload or {}


# -- send ----------------------------------------------------------------------------------


def test_send_by_name_prints_the_ids(cli: Any, client: CueClient) -> None:
    inbox = Mailbox.open(client, unique("inbox"))
    run = cli("send", inbox.name, '{"goal": "draft"}')
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0] == f"sent to {inbox.name} ({inbox.address}) from cli"
    message_id = lines[1].split()[1]
    execution_id = lines[2].split()[1]
    assert lines[1].startswith("message ") and lines[2].startswith("execution ")
    payload = payload_of(client, execution_id)
    assert payload["message"] == {"goal": "draft"}
    assert payload["cuemsg"]["id"] == message_id
    cli_box = Mailbox.open(client, "cli")
    assert payload["cuemsg"]["sender"] == cli_box.address


@pytest.mark.parametrize(
    ("text", "body"),
    [
        ('{"a": [1, 2]}', {"a": [1, 2]}),
        ("42", 42),
        ("null", None),
        ('"42"', "42"),
        ("hello world", "hello world"),
        ("{not json", "{not json"),
        ("NaN", "NaN"),
    ],
)
def test_send_body_is_json_else_a_string(cli: Any, client: CueClient, text: str, body: Any) -> None:
    inbox = Mailbox.open(client, unique("bodies"))
    run = cli("send", inbox.name, text, "--json")
    assert run.code == 0, run.err
    assert payload_of(client, run.json()["execution_id"])["message"] == body


def test_send_json_by_address_with_options(
    cli: Any, client: CueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Mailbox.open(client, unique("opts"))
    sender = unique("agent")
    monkeypatch.setattr("sys.stdin", io.StringIO('{"from": "stdin"}'))
    run = cli(
        "send", inbox.address, "-", "--from", sender, "--task", "special",
        "--thread", "t-9", "--ttl", "60", "--json",
    )  # fmt: skip
    assert run.code == 0, run.err
    sent = run.json()
    assert set(sent) == {
        "id", "execution_id", "to", "to_name", "from", "from_name", "scheduled_for"
    }  # fmt: skip
    assert (sent["to"], sent["to_name"], sent["from_name"]) == (inbox.address, inbox.name, sender)
    payload = payload_of(client, sent["execution_id"])
    meta = payload["cuemsg"]
    assert payload["message"] == {"from": "stdin"}
    assert payload["task"] == "special"
    assert meta["id"] == sent["id"]
    assert meta["sender"] == sent["from"] == Mailbox.open(client, sender).address
    assert meta["thread"] == "t-9"
    assert meta["expires_at"] > meta["sent_at"]


def test_send_to_an_unknown_name(cli: Any, client: CueClient) -> None:
    name = unique("nobody")
    run = cli("send", name, "hi")
    assert run.code == 1
    assert run.out == ""
    assert run.err.startswith(f"cuemsg: no mailbox named '{name}'")
    assert len(run.err.splitlines()) == 1


def test_send_to_a_cue_that_is_not_a_mailbox(cli: Any, client: CueClient) -> None:
    hook = client.cues.create(unique("hook"), transport="webhook", callback={"url": "http://x"})
    run = cli("send", hook.name, "hi")
    assert run.code == 1
    assert run.err == (
        f"cuemsg: the cue '{hook.name}' ({hook.id}) is not a mailbox: "
        "a webhook cue with no payload task\n"
    )


def test_send_to_an_unknown_cue_id_is_an_api_error(cli: Any) -> None:
    run = cli("send", "cue_doesnotexist", "hi")
    assert run.code == 1
    assert run.err.startswith("cuemsg: 404 cue_not_found: ")
    assert len(run.err.splitlines()) == 1


def test_bad_numbers_are_usage_errors(cli: Any, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["send", "x", "y", "--ttl", "0"], ["listen", "x", "--limit", "many"]):
        with pytest.raises(SystemExit) as exc:
            main(argv)
        assert exc.value.code == 2
    assert "must be > 0" in capsys.readouterr().err


# -- request -------------------------------------------------------------------------------


def test_request_prints_the_reply(cli: Any, calc: Mailbox) -> None:
    run = cli("request", "calc", '{"a": 2, "b": 3}')
    assert run.code == 0, run.err
    assert json.loads(run.out) == 5
    run = cli("request", calc.address, '{"a": 1, "b": 1}', "--from", unique("asker"), "--json")
    assert run.code == 0, run.err
    answer = run.json()
    assert answer["reply"] == 2
    assert answer["to"] == calc.address
    assert answer["seconds"] >= 0


def test_request_remote_error(cli: Any, calc: Mailbox) -> None:
    run = cli("request", "calc", "boom", "--timeout", "10")
    assert run.code == 1
    assert run.out == ""
    assert run.err == "cuemsg: remote error: ValueError: cannot add a boom\n"


def test_request_timeout_says_why(cli: Any, client: CueClient) -> None:
    idle = Mailbox.open(client, unique("idle"))
    run = cli("request", idle.name, '{"q": 1}', "--timeout", "0.3", "--from", unique("asker"))
    assert run.code == 3
    assert run.out == ""
    assert run.err.startswith("cuemsg: request timed out (no_responder): no reply to request ")
    assert "no receiver claimed it" in run.err
    assert len(run.err.splitlines()) == 1


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
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert err.endswith("received 1 message(s)\n")
    assert client.executions.get(sent.execution_id).status == "success"


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
        "status": "paused",
        "created_at": rows[box.name]["created_at"],
    }
    assert hook.name not in rows

    run = cli("inspect", "mailboxes")
    assert run.code == 0, run.err
    lines = run.out.splitlines()
    assert lines[0].split() == ["NAME", "ADDRESS", "TASK", "FIRED"]
    assert [box.name, box.address, box.task, "1"] in [line.split() for line in lines]


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


# -- configuration and errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "x", "hi"],
        ["request", "x", "hi"],
        ["listen", "x", "--wait", "0"],
        ["inspect", "mailboxes"],
        ["inspect", "messages", "x"],
        ["inspect", "dead-letters"],
        ["inspect", "message", "x", "--json"],
    ],
)
def test_missing_key(cli: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.delenv("CUEAPI_API_KEY")
    run = cli(*argv)
    assert (run.code, run.out, run.err) == (2, "", NO_KEY)


def test_missing_key_in_a_fresh_process() -> None:
    proc = run_cuemsg("inspect", "mailboxes", srv=None)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", NO_KEY)


def test_env_vars_in_a_fresh_process(srv: RunningServer, client: CueClient) -> None:
    box = Mailbox.open(client, unique("proc"))
    proc = run_cuemsg("send", box.name, '{"via": "env"}', "--json", srv=srv)
    assert proc.returncode == 0, proc.stderr
    sent = json.loads(proc.stdout)
    proc = run_cuemsg("inspect", "message", sent["execution_id"], "--json", srv=srv)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["body"] == {"via": "env"}


def test_flags_override_the_env(
    cli: Any, srv: RunningServer, client: CueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = Mailbox.open(client, unique("flags"))
    monkeypatch.setenv("CUEAPI_API_KEY", "cue_sk_wrong")
    monkeypatch.setenv("CUEAPI_BASE_URL", f"http://127.0.0.1:{free_port()}")
    flags = ["--api-key", srv.api_key, "--base-url", srv.base_url]
    run = cli("inspect", "mailboxes", "--json", *flags)
    assert run.code == 0, run.err
    assert box.name in [r["name"] for r in run.json()["mailboxes"]]
    run = cli(*flags, "send", box.name, "before the command")
    assert run.code == 0, run.err


def test_bad_key_is_an_api_error(cli: Any) -> None:
    run = cli("inspect", "mailboxes", "--api-key", "cue_sk_wrong")
    assert run.code == 1
    assert run.err.startswith("cuemsg: 401 ")
    assert len(run.err.splitlines()) == 1


def test_unreachable_server(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    run = cli("inspect", "dead-letters", "--base-url", url)
    assert run.code == 1
    assert run.err.startswith(f"cuemsg: cannot reach {url}: ")
    assert len(run.err.splitlines()) == 1
