"""Fixtures of the CLI tests: one embedded server over loopback per module.

Each test uses its own mailbox names. Most tests call `cuemsg.cli.main([...])`
in-process with the env vars set (`cli`); some run `python -m cuemsg` as a
subprocess (`run_cuemsg`: env reading in a fresh process, signals, no traceback).
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from cuemsg import CueClient, Mailbox, Message
from cuemsg.cli import main
from cuemsg.testing import RunningServer, run_server

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
