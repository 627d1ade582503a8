"""`SessionEnds`: which streamable HTTP session ended, seen from its HTTP traffic.

Driven in-process through `httpx.ASGITransport` in front of a small Starlette
app standing for the MCP endpoint (the full MCP path is in test_http.py).
"""

from __future__ import annotations

import functools
import logging
import time

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from cuemsg.mcp.sessions import SESSION_HEADER, SessionEnds

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(30)]


async def endpoint(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.method)


def app_with(ended: list[str], ttl: float = 60.0) -> tuple[SessionEnds, httpx.AsyncClient]:
    inner = Starlette(routes=[Route("/mcp", endpoint, methods=["GET", "POST", "DELETE"])])
    ends = SessionEnds(inner, ended.append, ttl)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(ends), base_url="http://t")
    return ends, client


async def test_a_delete_ends_its_session_once() -> None:
    ended: list[str] = []
    _, client = app_with(ended)
    async with client:
        await client.post("/mcp", headers={SESSION_HEADER: "a"})
        await client.post("/mcp", headers={SESSION_HEADER: "b"})
        await client.post("/mcp")  # no session yet (an initialize): nothing to track
        assert (await client.delete("/mcp", headers={SESSION_HEADER: "a"})).text == "DELETE"
        await client.delete("/mcp", headers={SESSION_HEADER: "a"})
    assert ended == ["a"]


async def test_only_sessions_idle_past_the_ttl_are_reaped() -> None:
    ended: list[str] = []
    ends, client = app_with(ended, ttl=0.2)
    async with client:
        await client.post("/mcp", headers={SESSION_HEADER: "old"})
        time.sleep(0.3)
        await client.post("/mcp", headers={SESSION_HEADER: "new"})
        assert ends.reap() == ["old"]
        assert ends.reap() == []
    assert ended == ["old"]


async def test_a_failing_release_is_logged_and_the_request_still_answered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(session: str) -> None:
        raise RuntimeError(f"cannot release {session}")

    inner = Starlette(routes=[Route("/mcp", endpoint, methods=["DELETE"])])
    transport = httpx.ASGITransport(SessionEnds(inner, fail, 60.0))
    with caplog.at_level(logging.ERROR, logger="cuemsg.mcp"):
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            answer = await client.delete("/mcp", headers={SESSION_HEADER: "s"})
    assert answer.status_code == 200
    assert "could not release the requests of ended session s" in caplog.text


@pytest.mark.parametrize("ttl", [0.0, -1.0])
def test_the_idle_ttl_must_be_positive(ttl: float) -> None:
    with pytest.raises(ValueError, match="the session idle TTL must be > 0 seconds"):
        SessionEnds(Starlette(), lambda session: None, ttl)


async def test_a_delete_while_a_request_is_open_ends_the_session_once() -> None:
    ended: list[str] = []
    release = anyio.Event()

    async def slow(request: Request) -> PlainTextResponse:
        await release.wait()
        return PlainTextResponse("late")

    inner = Starlette(
        routes=[Route("/mcp", endpoint, methods=["DELETE"]), Route("/slow", slow, methods=["GET"])]
    )
    transport = httpx.ASGITransport(SessionEnds(inner, ended.append, 60.0))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(functools.partial(client.get, "/slow", headers={SESSION_HEADER: "s"}))
        await anyio.sleep(0.05)
        await client.delete("/mcp", headers={SESSION_HEADER: "s"})
        release.set()
    assert ended == ["s"]
