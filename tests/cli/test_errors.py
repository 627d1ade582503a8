"""Configuration and errors of the client commands: keys, URLs, --json errors, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
from typing import Any

import pytest

from cuemsg import CueClient, Mailbox
from cuemsg.testing import RunningServer, free_port
from tests.cli.conftest import NO_KEY, run_cuemsg, subprocess_env, unique

# -- configuration and errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["send", "x", '"hi"'],
        ["request", "x", '"hi"'],
        ["listen", "x", "--wait", "0"],
        ["inspect", "mailboxes"],
        ["inspect", "messages", "x"],
        ["inspect", "dead-letters"],
        ["inspect", "message", "x"],
    ],
)
def test_missing_key(cli: Any, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    monkeypatch.delenv("CUEAPI_API_KEY")
    run = cli(*argv)
    assert (run.code, run.out, run.err) == (2, "", NO_KEY)


def test_missing_key_with_json(cli: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUEAPI_API_KEY")
    run = cli("inspect", "message", "x", "--json")
    assert (run.code, run.err) == (2, "")
    assert run.json() == {
        "error": NO_KEY.removeprefix("cuemsg: ").strip(),
        "type": "MissingAPIKey",
        "exit_code": 2,
    }


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
    run = cli(*flags, "send", box.name, "before the command", "--text")
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


def test_base_url_that_is_not_http_is_a_usage_error(cli: Any) -> None:
    run = cli("send", "x", "1", "--base-url", "ftp://127.0.0.1:8787")  # was a traceback
    assert (run.code, run.out) == (2, "")
    assert (
        run.err == "cuemsg: the base URL 'ftp://127.0.0.1:8787' is not an http:// or https:// URL\n"
    )


def test_base_url_without_a_scheme_gets_a_hint(cli: Any) -> None:
    run = cli("inspect", "mailboxes", "--base-url", "127.0.0.1:8787")
    assert run.code == 2
    assert run.err == (
        "cuemsg: the base URL '127.0.0.1:8787' has no scheme: add http:// (http://127.0.0.1:8787)\n"
    )


@pytest.mark.parametrize(
    ("argv", "type", "code"),
    [
        (["send", "cue_doesnotexist", "1"], "NotFound", 1),
        (["inspect", "messages", "no-such-mailbox"], "CommandError", 1),
        (["request", "cue_doesnotexist", "1", "--timeout", "0.3"], "NotFound", 1),
        (["inspect", "mailboxes", "--api-key", "cue_sk_wrong"], "AuthenticationError", 1),
        (["inspect", "mailboxes", "--base-url", "localhost:1"], "UsageError", 2),
        (["nosuchcommand", "--json"], "UsageError", 2),
    ],
)
def test_json_errors_are_one_object(cli: Any, argv: list[str], type: str, code: int) -> None:
    run = cli(*argv, "--json")
    assert (run.code, run.err) == (code, "")
    error = run.json()
    assert set(error) == {"error", "type", "exit_code"}
    assert (error["type"], error["exit_code"]) == (type, code)
    assert error["error"]


def test_timeout_with_json(cli: Any, client: CueClient) -> None:
    idle = Mailbox.open(client, unique("idle"))
    run = cli("request", idle.name, "{}", "--timeout", "0.3", "--json")
    assert (run.code, run.json()["type"], run.json()["exit_code"]) == (3, "RequestTimeout", 3)


def test_ctrl_c_during_a_request_exits_130(srv: RunningServer, client: CueClient) -> None:
    idle = Mailbox.open(client, unique("slow"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuemsg", "request", idle.name, "{}", "--timeout", "60"],
        env=subprocess_env(srv),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(500):  # wait until the request is sent: the command is waiting now
            if client.executions.list(cue_id=idle.address).executions:
                break
            threading.Event().wait(0.02)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert (proc.returncode, out, err) == (130, "", "cuemsg: interrupted: cuemsg request stopped\n")
