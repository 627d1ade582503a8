"""What `AsyncMailbox.open()` returns (`Opening`: await it or enter it with
`async with`), and `run_flow`, which drives a flow that only calls the client
(opening and looking up a mailbox, before there is one)."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from cuemsg.cueapi.async_client import AsyncCueClient
from cuemsg.mailbox._ops import Flow, Op

if TYPE_CHECKING:
    from cuemsg.mailbox.aio import AsyncMailbox

R = TypeVar("R")


class Opening:
    """What `AsyncMailbox.open()` returns: await it, or enter it with `async with`."""

    def __init__(self, make: Callable[[], Awaitable[AsyncMailbox]]) -> None:
        self._make = make
        self._mailbox: AsyncMailbox | None = None

    def __await__(self) -> Generator[Any, None, AsyncMailbox]:
        return self._make().__await__()

    async def __aenter__(self) -> AsyncMailbox:
        self._mailbox = await self._make()
        return await self._mailbox.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._mailbox is not None
        await self._mailbox.__aexit__(exc_type, exc, tb)


async def adrive(flow: Flow[R], perform: Callable[[Op], Awaitable[Any]]) -> R:
    """Run `flow` to its end, awaiting `perform` on each op it yields (an op that
    raises resumes the flow with the error): `_ops.drive`'s async twin."""
    value: Any = None
    exc: BaseException | None = None
    try:
        while True:
            try:  # `advance`, written in (as `drive`)
                op = flow.throw(exc) if exc is not None else flow.send(value)
            except StopIteration as stop:
                result: R = stop.value
                return result
            value, exc = None, None
            try:
                value = await perform(op)
            except Exception as err:
                exc = err
    finally:
        flow.close()


async def run_flow(client: AsyncCueClient, flow: Flow[R]) -> R:
    """Run a flow that only calls the client (no mailbox yet)."""

    async def call(op: Op) -> Any:
        value = op.call(client)
        return await value if inspect.isawaitable(value) else value

    return await adrive(flow, call)
