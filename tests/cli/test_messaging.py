"""`cuemsg send`, `request` and `reply` against a real server: bodies, output, errors."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from cuemsg import CueClient, Mailbox
from tests.cli.conftest import payload_of, unique

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
    ("argv", "body"),
    [
        (['{"a": [1, 2]}'], {"a": [1, 2]}),
        (["42"], 42),
        (["null"], None),
        (['"42"'], "42"),
        (["hello world", "--text"], "hello world"),
        (["{not json", "--text"], "{not json"),
        (["NaN", "--text"], "NaN"),
        (["", "--text"], ""),
    ],
)
def test_send_body_is_json_or_text_on_purpose(
    cli: Any, client: CueClient, argv: list[str], body: Any
) -> None:
    inbox = Mailbox.open(client, unique("bodies"))
    run = cli("send", inbox.name, *argv, "--json")
    assert run.code == 0, run.err
    assert payload_of(client, run.json()["execution_id"])["message"] == body


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '{"goal": "draft"',
            "cuemsg: the body is not valid JSON: Expecting ',' delimiter at line 1 column 17 "
            "(to send it as text on purpose, add --text)\n"
            '  {"goal": "draft"\n'
            "                  ^\n",
        ),
        (
            "{'goal': 1}",
            "cuemsg: the body is not valid JSON: Expecting property name enclosed in double "
            "quotes at line 1 column 2 (to send it as text on purpose, add --text)\n"
            "  {'goal': 1}\n"
            "   ^\n",
        ),
        (
            '{"a": 1,\n "b": }',
            "cuemsg: the body is not valid JSON: Expecting value at line 2 column 7 "
            "(to send it as text on purpose, add --text)\n"
            '   "b": }\n'
            "        ^\n",
        ),
        (
            "NaN",
            "cuemsg: the body holds NaN, which is not JSON "
            "(to send it as text on purpose, add --text)\n",
        ),
        (
            '{"x": -Infinity}',
            "cuemsg: the body holds -Infinity, which is not JSON "
            "(to send it as text on purpose, add --text)\n",
        ),
        (
            "",
            'cuemsg: the body is empty: give JSON, e.g. {} or "" '
            "(to send it as text on purpose, add --text)\n",
        ),
    ],
)
def test_a_body_that_is_not_json_is_refused(
    cli: Any, client: CueClient, text: str, error: str
) -> None:
    inbox = Mailbox.open(client, unique("strict"))
    run = cli("send", inbox.name, text)
    assert (run.code, run.out, run.err) == (2, "", error)
    assert client.cues.get(inbox.address).fired_count == 0


def test_a_bad_body_with_json_is_one_json_error(cli: Any) -> None:
    run = cli("request", "anyone", "{oops", "--json")
    assert run.code == 2
    error = run.json()
    assert (error["type"], error["exit_code"]) == ("BodyError", 2)
    assert error["error"].startswith("the body is not valid JSON: Expecting property name")


def test_stdin_body_is_json_too(
    cli: Any, client: CueClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    inbox = Mailbox.open(client, unique("stdin"))
    monkeypatch.setattr("sys.stdin", io.StringIO("agents talk\n"))
    run = cli("send", inbox.name, "-")
    assert run.code == 2
    assert run.err.startswith("cuemsg: the body is not valid JSON: Expecting value at line 1")
    monkeypatch.setattr("sys.stdin", io.StringIO("agents talk\n"))
    run = cli("send", inbox.name, "-", "--text", "--json")
    assert run.code == 0, run.err
    assert payload_of(client, run.json()["execution_id"])["message"] == "agents talk"


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
    run = cli("send", name, '"hi"')
    assert run.code == 1
    assert run.out == ""
    assert run.err.startswith(f"cuemsg: no mailbox named '{name}'")
    assert len(run.err.splitlines()) == 1


def test_send_to_a_misspelled_name_names_the_near_mailbox(cli: Any, client: CueClient) -> None:
    name = unique("planner")
    Mailbox.open(client, name)
    run = cli("send", name[:-1], '"hi"')  # one letter short
    assert run.code == 1 and run.out == ""
    assert f"no mailbox named {name[:-1]!r} (did you mean {name!r}?" in run.err


def test_send_to_a_cue_that_is_not_a_mailbox(cli: Any, client: CueClient) -> None:
    hook = client.cues.create(unique("hook"), transport="webhook", callback={"url": "http://x"})
    run = cli("send", hook.name, "1")
    assert run.code == 1
    assert run.err == (
        f"cuemsg: the cue '{hook.name}' ({hook.id}) is not a mailbox: "
        "a webhook cue with no payload task\n"
    )


def test_send_to_an_unknown_cue_id_is_an_api_error(cli: Any) -> None:
    run = cli("send", "cue_doesnotexist", "1")
    assert run.code == 1
    assert run.err.startswith("cuemsg: 404 cue_not_found: ")
    assert len(run.err.splitlines()) == 1


def test_bad_numbers_are_usage_errors(cli: Any) -> None:
    run = cli("send", "x", "1", "--ttl", "0")
    assert run.code == 2
    assert run.err.startswith("usage: cuemsg send")
    assert run.err.endswith("cuemsg: send: argument --ttl: must be > 0, not 0\n")
    run = cli("listen", "x", "--limit", "many", "--json")
    assert (run.code, run.err) == (2, "")
    assert run.json() == {
        "error": "listen: argument --limit: not a number: 'many'",
        "type": "UsageError",
        "exit_code": 2,
    }


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
    run = cli("request", "calc", '"boom"', "--timeout", "10")
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
