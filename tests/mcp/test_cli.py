"""The arguments of `python -m cuemsg.mcp` (the same as `cuemsg mcp`): errors and --embedded."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client

from cuemsg.mcp.cli import add_parser
from cuemsg.testing import free_port, run_server
from tests.mcp.conftest import call

pytestmark = pytest.mark.timeout(60)


def run_module(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CUEAPI_")}
    return subprocess.run(
        [sys.executable, "-m", "cuemsg.mcp", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        stdin=subprocess.DEVNULL,
    )


def test_no_key_is_a_usage_error() -> None:
    done = run_module("--mailbox", "a")
    assert done.returncode == 2
    assert "no CueAPI key: set CUEAPI_API_KEY or pass --api-key" in done.stderr
    assert done.stdout == ""  # stdout belongs to the MCP transport


def test_bad_http_address_is_a_usage_error() -> None:
    done = run_module("--mailbox", "a", "--http", "8765", "--api-key", "cue_sk_x")
    assert done.returncode == 2
    assert "--http wants HOST:PORT" in done.stderr


def test_session_ttl_must_be_positive() -> None:
    done = run_module(
        "--mailbox", "a", "--api-key", "k", "--http", "127.0.0.1:1", "--session-ttl", "0"
    )
    assert done.returncode == 2
    assert "--session-ttl must be > 0 seconds, not 0" in done.stderr


def test_a_base_url_that_is_not_http_is_a_usage_error() -> None:
    done = run_module("--mailbox", "a", "--api-key", "k", "--base-url", "127.0.0.1:9")
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "cuemsg mcp: the base URL '127.0.0.1:9' is not an http:// or https:// URL: "
        "add http:// (http://127.0.0.1:9)\n"
    )


def test_mailbox_is_required() -> None:
    done = run_module()
    assert done.returncode == 2
    assert "--mailbox" in done.stderr


def test_add_parser_hooks_into_a_cli() -> None:
    parser = argparse.ArgumentParser(prog="cuemsg")
    add_parser(parser.add_subparsers(dest="command"))
    parser.add_argument("--api-key")  # the command's own option, given before `mcp`
    args = parser.parse_args(["--api-key", "k1", "mcp", "--mailbox", "x", "--http", "127.0.0.1:9"])
    assert (args.mailbox, args.http, args.func.__name__) == ("x", "127.0.0.1:9", "run")
    assert args.api_key == "k1"  # not reset by the sub-command's own --api-key
    after = parser.parse_args(["mcp", "--mailbox", "x", "--api-key", "k2"])
    assert after.api_key == "k2"


@pytest.mark.anyio
async def test_embedded_server_lets_two_agents_share_a_database(tmp_path: Path) -> None:
    db = str(tmp_path / "agents.db")
    env = {"PYTHONPATH": os.environ.get("PYTHONPATH", "")}

    def params(name: str) -> StdioServerParameters:
        args = ["-m", "cuemsg.mcp", "--mailbox", name, "--embedded", db]
        return StdioServerParameters(command=sys.executable, args=args, env=env)

    async with (
        stdio_client(params("ann")) as (r1, w1),
        ClientSession(r1, w1, read_timeout_seconds=60) as ann,
    ):
        await ann.initialize()
        await call(ann, "send_message", to="ann", body="hello from the embedded server")
    # A second process on the same database file is the same tenant (its dev key).
    async with (
        stdio_client(params("ben")) as (r2, w2),
        ClientSession(r2, w2, read_timeout_seconds=60) as ben,
    ):
        await ben.initialize()
        names = {m["name"] for m in (await call(ben, "list_mailboxes"))["mailboxes"]}
        assert names == {"ann", "ben"}
        await call(ben, "send_message", to="ann", body="hi ann")
    async with (
        stdio_client(params("ann")) as (r3, w3),
        ClientSession(r3, w3, read_timeout_seconds=60) as ann,
    ):
        await ann.initialize()
        got = await call(ann, "check_inbox", wait_seconds=5)
        assert [m["body"] for m in got["messages"]] == ["hello from the embedded server", "hi ann"]


def test_a_mailbox_that_cannot_open_is_one_line_not_a_traceback() -> None:
    # The mailbox opens inside the SDK's task groups: these came out as exception groups.
    with run_server(db=":memory:") as srv:
        refused = run_module(
            "--mailbox", "a", "--api-key", "cue_sk_bad", "--base-url", srv.base_url
        )
        empty = run_module("--mailbox", "", "--api-key", srv.new_key(), "--base-url", srv.base_url)
    assert (refused.returncode, refused.stdout) == (1, "")
    assert refused.stderr == (
        "cuemsg mcp: cannot open the mailbox 'a': 401 invalid_api_key: the API key is not valid\n"
    )
    assert (empty.returncode, empty.stdout) == (1, "")
    assert empty.stderr.startswith("cuemsg mcp: cannot open the mailbox '': 422 validation_error")
    assert len(empty.stderr.splitlines()) == 1
    gone = run_module(
        "--mailbox", "a", "--api-key", "k", "--base-url", f"http://127.0.0.1:{free_port()}"
    )
    assert gone.returncode == 1 and len(gone.stderr.splitlines()) == 1
    assert gone.stderr.startswith("cuemsg mcp: cannot open the mailbox 'a': ")
