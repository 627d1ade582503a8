"""Fixtures for `cuemsg mcp`: an embedded server on loopback, MCP sessions over stdio or HTTP.

The MCP server runs as a real subprocess (`python -m cuemsg.mcp`), spawned by
the official `mcp` client; it talks to the embedded CueAPI server over real
HTTP. The lease is short so a killed agent's requests come back quickly.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
from mcp.client import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from cuemsg import CueClient, Mailbox, Message
from cuemsg.testing import RunningServer, free_port, run_server

#: Lease of a claim on the test server, in seconds (held requests renew a third of it).
LEASE = 2.0


@pytest.fixture
def srv() -> Iterator[RunningServer]:
    with run_server(lease_seconds=LEASE, sweep_interval=0.1) as running:
        yield running


def agent_env(srv: RunningServer) -> dict[str, str]:
    """The environment of an MCP agent process: key, URL, and this worktree's code."""
    return {
        "CUEAPI_API_KEY": srv.api_key,
        "CUEAPI_BASE_URL": srv.base_url,
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }


def agent_command(name: str, *extra: str) -> list[str]:
    return ["-m", "cuemsg.mcp", "--mailbox", name, *extra]


@contextlib.asynccontextmanager
async def stdio_agent(srv: RunningServer, name: str) -> AsyncIterator[ClientSession]:
    """An initialized MCP session with `python -m cuemsg.mcp --mailbox name` over stdio."""
    params = StdioServerParameters(
        command=sys.executable, args=agent_command(name), env=agent_env(srv)
    )
    async with (
        stdio_client(params) as (read, write),
        ClientSession(read, write, read_timeout_seconds=60) as session,
    ):
        await session.initialize()
        yield session


@contextlib.contextmanager
def http_agent_process(
    srv: RunningServer, name: str, *extra: str
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`python -m cuemsg.mcp --http` in a subprocess; yields its MCP endpoint URL and process."""
    port = free_port()
    env = {**os.environ, **agent_env(srv)}
    proc = subprocess.Popen(
        [sys.executable, *agent_command(name, "--http", f"127.0.0.1:{port}", *extra)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}/mcp"
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                raise RuntimeError(f"the MCP server exited early: {err}")
            try:
                httpx.get(url, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise RuntimeError("the MCP HTTP server did not start") from None
                time.sleep(0.1)
        yield url, proc
    finally:
        if proc.poll() is None:
            proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:  # pragma: no cover - a hang guard
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@contextlib.asynccontextmanager
async def http_session(url: str, *, terminate: bool = True) -> AsyncIterator[ClientSession]:
    """An initialized MCP session over streamable HTTP (`terminate`: DELETE it on exit)."""
    async with (
        streamable_http_client(url, terminate_on_close=terminate) as (read, write),
        ClientSession(read, write, read_timeout_seconds=60) as session,
    ):
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> Any:
    """Call `tool`; answers its structured result, failing the test on `isError`."""
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {text_of(result)}"
    return result.structured_content


async def call_error(session: ClientSession, tool: str, **arguments: Any) -> str:
    """Call `tool`, which must fail with `isError`; answers the error text."""
    result = await session.call_tool(tool, arguments)
    assert result.is_error, f"{tool} did not fail: {result.structured_content}"
    return text_of(result)


def text_of(result: Any) -> str:
    return " ".join(getattr(block, "text", "") for block in result.content)


@pytest.fixture
def client(srv: RunningServer) -> Iterator[CueClient]:
    with CueClient(srv.api_key, srv.base_url) as c:
        yield c


class Background:
    """Runs `fn` in a thread; `.result()` joins it and answers its value or raises its error."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._value: list[Any] = []
        self._error: list[BaseException] = []

        def run() -> None:
            try:
                self._value.append(fn())
            except BaseException as exc:
                self._error.append(exc)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def result(self, timeout: float = 30) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "the background call did not finish"
        if self._error:
            raise self._error[0]
        return self._value[0]


def address_of(client: CueClient, name: str) -> str:
    """The address of the mailbox `name` (Mailbox.open is get-or-create)."""
    with Mailbox.open(client, name) as mb:
        return mb.address


def serve_in_thread(client: CueClient, name: str, handler: Callable[[Message[Any]], Any]) -> Any:
    """A Python responder on mailbox `name`, serving until the returned stop() is called."""
    mb = Mailbox.open(client, name)
    thread = threading.Thread(target=mb.serve, args=(handler,), daemon=True)
    thread.start()

    def stop() -> None:
        mb.stop()
        thread.join(10)
        mb.close()

    return stop
