"""The MCP server: one mailbox's tools and inbox resource, on the official `mcp` SDK.

`create_server(name, ...)` builds an `MCPServer` bound to the mailbox
`name` (the agent's identity). Its lifespan opens the CueAPI client and the
`agent.Agent` (creating the mailbox if needed) and, when it ends, releases
the requests the agent still holds so they are delivered again.
`create_http_app(name, ...)` serves it over streamable HTTP, where each MCP
session holds its own requests and lets go of them when it ends
(`sessions.SessionEnds`). The tool
descriptions are written for the LLM that chooses between them: when to
use each, what it returns, what its errors mean. Every expected failure is
a tool result with `isError` and a sentence to act on (`ToolError`).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from pydantic import Field
from starlette.types import ASGIApp

from cuemsg import AsyncCueClient, CuemsgError, __version__
from cuemsg.mcp.agent import MAX_ASK_TIMEOUT, MAX_INBOX_LIMIT, MAX_INBOX_WAIT, Agent, AgentError
from cuemsg.mcp.sessions import DEFAULT_SESSION_TTL, SESSION_HEADER, SessionEnds
from cuemsg.mcp.watch import InboxWatch

__all__ = ["create_http_app", "create_server"]

INSTRUCTIONS = """\
You have a cuemsg mailbox named {name}: other agents (LLMs in other MCP clients, or
programs) reach you there, and you reach them by mailbox name. Every message is
recorded: who took it, how often, and what became of it. Call check_inbox to read
what was sent to you; a message marked is_request waits for your reply (or decline)
before its deadline. Use send_message to tell, ask_agent to ask and wait for an
answer, list_mailboxes to see who exists, message_history for what happened."""

_TO = Field(description="The recipient: a mailbox name (e.g. 'planner') or address ('cue_...').")
_BODY = Field(description="The message: any JSON value (text, number, object, list).")


@contextlib.contextmanager
def _tool_errors() -> Iterator[None]:
    """Turn expected failures into tool errors the model reads (never a crash)."""
    try:
        yield
    except AgentError as exc:
        raise ToolError(str(exc)) from exc
    except CuemsgError as exc:
        raise ToolError(f"the mailbox service failed: {type(exc).__name__}: {exc}") from exc


def _session_id(ctx: Context) -> str | None:
    """The MCP session of this call: the transport's session id, None over stdio."""
    headers = ctx.headers
    return headers.get(SESSION_HEADER) if headers is not None else None


class _Opened:
    """What the lifespan opened, for the tools to use."""

    agent: Agent | None = None

    def get(self) -> Agent:
        if self.agent is None:  # pragma: no cover - tools run only inside the lifespan
            raise ToolError("the mailbox is not open yet; try again in a moment")
        return self.agent

    def end_session(self, session_id: str) -> None:
        if self.agent is not None:
            self.agent.end_session(session_id)


def create_server(
    name: str, *, api_key: str | None = None, base_url: str | None = None
) -> MCPServer[Any]:
    """An MCP server that gives one agent the mailbox `name` and the tools over it.

    Args:
        name: the mailbox (opened, or created, when the server starts).
        api_key: CueAPI key; default `CUEAPI_API_KEY`.
        base_url: CueAPI URL; default `CUEAPI_BASE_URL`, else the hosted service.
    """
    return _build(name, _Opened(), api_key=api_key, base_url=base_url)


def create_http_app(
    name: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    session_ttl: float = DEFAULT_SESSION_TTL,
) -> ASGIApp:
    """The server of `create_server` as a streamable HTTP ASGI app (endpoint `/mcp`).

    Each MCP session holds the requests its `check_inbox` received; when the
    session ends (the client's `DELETE`, or `session_ttl` seconds with no
    request open) they are released and delivered again.

    Raises:
        ValueError: `session_ttl` is not above 0.
    """
    opened = _Opened()
    server = _build(name, opened, api_key=api_key, base_url=base_url)
    app = server.streamable_http_app(session_idle_timeout=session_ttl)
    return SessionEnds(app, opened.end_session, session_ttl)


def _build(
    name: str, opened: _Opened, *, api_key: str | None, base_url: str | None
) -> MCPServer[Any]:
    """The `MCPServer` of mailbox `name`; its lifespan fills `opened` with the agent."""

    @contextlib.asynccontextmanager
    async def lifespan(_: MCPServer[Any]) -> AsyncIterator[None]:
        async with (
            AsyncCueClient(api_key, base_url) as client,
            Agent.open(client, name) as agent,
            anyio.create_task_group() as tg,
        ):
            opened.agent = agent
            tg.start_soon(watch.watch_forever, agent.mailbox.waiting)
            try:
                yield None
            finally:
                opened.agent = None
                tg.cancel_scope.cancel()

    watch = InboxWatch(f"mailbox://{name}/inbox")
    server: MCPServer[Any] = MCPServer(
        f"cuemsg-{name}",
        instructions=INSTRUCTIONS.format(name=name),
        version=__version__,
        lifespan=lifespan,
        # Stderr is the MCP client's log of this server: warnings, not every HTTP request.
        log_level="WARNING",
        # Listening clients hear of new mail on mailbox://NAME/inbox (see watch.py).
        subscriptions=watch,
    )

    @server.tool()
    async def send_message(
        to: Annotated[str, _TO],
        body: Annotated[Any, _BODY],
        thread: Annotated[
            str | None,
            Field(description="Optional conversation id; replies and history keep it."),
        ] = None,
        ttl_seconds: Annotated[
            float | None,
            Field(gt=0, description="Optional: drop the message unread after this many seconds."),
        ] = None,
    ) -> dict[str, Any]:
        """Send a one-way message to another agent's mailbox and return at once.

        Use it to tell, hand off work or answer in your own words when no reply is
        needed (to ask and wait for an answer use ask_agent). Returns message_id and
        execution_id: the message's record, which message_history shows later with
        who took it and its outcome. Errors: an unknown mailbox (the error lists the
        mailboxes that exist; pick one of them) or a body that cannot be sent (too
        large: send a shorter one).
        """
        with _tool_errors():
            return await opened.get().send_message(to, body, thread=thread, ttl_seconds=ttl_seconds)

    @server.tool()
    async def check_inbox(
        ctx: Context,
        wait_seconds: Annotated[
            float,
            Field(
                ge=0,
                le=MAX_INBOX_WAIT,
                description="How long to wait for a first message if none is waiting (0-30).",
            ),
        ] = 0,
        limit: Annotated[
            int, Field(ge=1, le=MAX_INBOX_LIMIT, description="At most this many messages (1-50).")
        ] = 10,
    ) -> dict[str, Any]:
        """Read the messages waiting in your mailbox, oldest first.

        Call it when you expect mail or are asked to check. Returns messages, each with
        id, from (name and address), body, thread, sent_at, is_request and deadline,
        plus held_requests (requests you still owe an answer). One-way messages are
        marked delivered to you as you receive them: they will not come again. A
        message with is_request true waits for you: answer it with reply (or refuse
        with decline) using its id before its deadline; until then it is held for this
        session (if the session ends, it goes back to the inbox). An empty list means
        nothing arrived within wait_seconds.
        """
        with _tool_errors(), watch.reading():
            return await opened.get().check_inbox(
                wait_seconds=wait_seconds,
                limit=limit,
                session=_session_id(ctx),
            )

    @server.tool()
    async def reply(
        message_id: Annotated[str, Field(description="The id of a request from check_inbox.")],
        body: Annotated[Any, Field(description="Your answer: any JSON value.")],
        ctx: Context,
    ) -> dict[str, Any]:
        """Answer a request that check_inbox gave you (is_request true).

        The requester, waiting in ask_agent or a program's request(), receives body as
        the answer. Returns the reply's execution id. Errors: the id is not a request
        you hold (already answered, declined, expired, held by another session, or a
        one-way message that needs no answer), or its deadline passed and the requester
        stopped waiting.
        """
        with _tool_errors():
            return await opened.get().reply(message_id, body, session=_session_id(ctx))

    @server.tool()
    async def decline(
        message_id: Annotated[str, Field(description="The id of a request from check_inbox.")],
        reason: Annotated[str, Field(description="Why you refuse (the requester reads it).")],
        ctx: Context,
    ) -> dict[str, Any]:
        """Refuse a request that check_inbox gave you, saying why.

        Use it when you cannot or should not answer, so the requester stops waiting at
        once instead of timing out: it receives an error carrying your reason. Errors:
        as for reply (the id is not a request you hold).
        """
        with _tool_errors():
            return await opened.get().decline(message_id, reason, session=_session_id(ctx))

    @server.tool()
    async def ask_agent(
        to: Annotated[str, _TO],
        body: Annotated[Any, Field(description="The question or task: any JSON value.")],
        ctx: Context,
        timeout_seconds: Annotated[
            float,
            Field(
                ge=1,
                le=MAX_ASK_TIMEOUT,
                description="How long to wait for the answer, in seconds (1-600).",
            ),
        ] = 60,
    ) -> dict[str, Any]:
        """Ask another agent something and wait for its answer.

        Sends a request and returns {"reply": <the answer's body>} when it comes;
        progress is reported while waiting. Errors say why there was no answer: the
        mailbox is unknown (the error lists those that exist), the other agent declined
        or failed (its reason is given), or the timeout passed, with the reason:
        no_responder (nobody is reading that mailbox now), dead_responder (it took the
        request and stopped), slow_responder (still working, or answered too late).
        """

        async def progress(done: float, total: float, text: str) -> None:
            await ctx.report_progress(done, total, text)

        with _tool_errors():
            answer = await opened.get().ask_agent(
                to, body, timeout_seconds=timeout_seconds, progress=progress
            )
        return {"reply": answer}

    @server.tool()
    async def list_mailboxes() -> dict[str, Any]:
        """List the mailboxes you can write to.

        Returns mailboxes, each with name, address, waiting (messages not yet read),
        responder_alive (a program is serving it now, so ask_agent gets a quick answer)
        and is_you (your own mailbox). Use it to find the right recipient by name.
        """
        with _tool_errors():
            return {"mailboxes": await opened.get().list_mailboxes()}

    @server.tool()
    async def message_history(
        thread: Annotated[
            str | None, Field(description="Only this conversation id; default: all.")
        ] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="At most this many (1-200).")] = 20,
    ) -> dict[str, Any]:
        """Look up the record of your recent messages, in and out, newest first.

        Use it to check whether a message was delivered and what became of it, or to
        find an answer that came after ask_agent gave up. Each entry has direction (in
        or out), message_id, kind, from, to, thread, sent_at, body, status, attempts,
        claimed_by (who took it), outcome, and reply_execution_id (the reply it got).
        """
        with _tool_errors():
            return {"messages": await opened.get().message_history(thread=thread, limit=limit)}

    @server.resource(
        f"mailbox://{name}/inbox",
        name="inbox",
        description=f"The inbox of mailbox {name}: waiting count and the oldest waiting messages.",
        mime_type="application/json",
    )
    async def inbox() -> dict[str, Any]:
        try:
            return await opened.get().inbox()
        except CuemsgError as exc:
            raise ResourceError(f"could not read the inbox: {exc}") from exc

    return server
