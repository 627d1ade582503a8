"""The connections of `AsyncKeepAliveTransport`, and reading one answer from either kind.

On asyncio a connection is an `asyncio.Protocol` of its own (`AsyncioConn`):
the request is one `transport.write`, the answer's bytes collect in a buffer
as the loop reads them, and a waiting read sleeps on one future, timed by
the connection's one read timer. On any other anyio backend (trio) it is an anyio
byte stream (`AnyioConn`). Profiles of the one-message cycle showed why
asyncio gets its own: anyio's stream adds, per request, a pass through the
event loop after the write, a pause and a resume of reading (two epoll
changes) and two cancel scopes for the timeouts, which together cost a
fifth of the async client's CPU per message.

Both kinds give the transport the same four things (`stale`, `send`,
`answer`, `close`) and fail the same way, with anyio's exceptions:
`IncompleteRead` / `EndOfStream` (the peer closed mid-answer),
`DelimiterNotFound` (a head too long), `BrokenResourceError` (reset),
`TimeoutError` (a deadline passed), `ValueError` (a malformed answer);
`_async_transport.py` maps them to httpx's.
"""

from __future__ import annotations

import asyncio
import select
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol

import anyio
import sniffio
from anyio.abc import ByteStream, SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream
from anyio.streams.tls import TLSStream

from cuemsg.cueapi._http11 import (
    MAX_HEAD,
    MAX_LINE,
    chunk_size,
    framing,
    is_final,
    parse_head,
    reusable,
)

__all__ = ["AnyioConn", "AsyncioConn", "Conn", "connect"]


@dataclass
class Answer:
    status: int
    reason: bytes
    version: bytes
    headers: list[tuple[bytes, bytes]]
    content: bytes
    reusable: bool


class Receiver(Protocol):
    """What reading an answer needs (`BufferedByteReceiveStream` has it)."""

    async def receive_until(self, delimiter: bytes, max_bytes: int) -> bytes: ...
    async def receive_exactly(self, nbytes: int) -> bytes: ...
    async def receive(self) -> bytes: ...


class Conn(Protocol):
    """One keep-alive connection, used by one request at a time."""

    def stale(self) -> bool: ...
    async def send(self, data: bytes, timeout: float | None) -> None: ...
    async def answer(self, method: str, timeout: float | None) -> Answer: ...
    async def close(self) -> None: ...


# -- reading an answer --------------------------------------------------------------------


async def _read_chunked(reader: Receiver) -> bytes:
    parts: list[bytes] = []
    while size := chunk_size(await reader.receive_until(b"\r\n", MAX_LINE)):
        parts.append(await reader.receive_exactly(size))
        if await reader.receive_exactly(2) != b"\r\n":
            raise ValueError("a chunk does not end with CRLF")
    while await reader.receive_until(b"\r\n", MAX_LINE):  # trailers, then a blank line
        pass
    return b"".join(parts)


async def _read_to_eof(reader: Receiver) -> bytes:
    parts: list[bytes] = []  # receive() hands out what the buffer holds first
    while True:
        try:
            parts.append(await reader.receive())
        except anyio.EndOfStream:
            return b"".join(parts)


async def read_answer(reader: Receiver, method: str) -> Answer:
    """Read one whole answer (1xx ones skipped); `reusable` if the connection may serve more."""
    while True:
        version, status, reason, headers = parse_head(
            await reader.receive_until(b"\r\n\r\n", MAX_HEAD)
        )
        if is_final(status):
            break
    keep = reusable(version, headers)
    kind, length = framing(method, status, headers)
    if kind == "none":
        content = b""
    elif kind == "chunked":
        content = await _read_chunked(reader)
    elif kind == "length":
        content = await reader.receive_exactly(length)
    else:  # the answer ends with the connection
        content, keep = await _read_to_eof(reader), False
    return Answer(status, reason, version, headers, content, keep)


def _readable(sock: socket.socket | None) -> bool:
    """True if reading `sock` would not block (the server's EOF, stray bytes), or it is gone."""
    if sock is None or sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


# -- asyncio ------------------------------------------------------------------------------


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


class _AnswerProtocol(asyncio.Protocol):
    """Collects what the server sends; a reader waits on `_more()` until `deadline`.

    Reading is never paused: between requests the buffer stays empty unless
    the server sent what nobody asked for, which makes the connection stale.

    The read deadline has one timer per connection that stays armed across
    waits and requests (`_on_timer`): arming and cancelling one per wait
    showed in profiles, and each request's deadline is usually later than
    the one the timer is already set for, so it fires about once a timeout.
    """

    loop: asyncio.AbstractEventLoop  # set in connection_made: no get_running_loop per call

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.eof = False  # the server closed (or the connection was lost)
        self.error: BaseException | None = None  # why it was lost, if not a clean close
        self.deadline: float | None = None  # loop time the current wait ends at
        self._waiter: asyncio.Future[None] | None = None
        self._drained: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None  # the read timer, if armed

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.loop = asyncio.get_running_loop()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._wake()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake()
        return False  # close the transport: the server will not read more from us either

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self.disarm()
        self._wake()
        self.resume_writing()

    def pause_writing(self) -> None:
        if self._drained is None:
            self._drained = self.loop.create_future()

    def resume_writing(self) -> None:
        drained, self._drained = self._drained, None
        if drained is not None and not drained.done():
            drained.set_result(None)

    def disarm(self) -> None:
        """Cancel the read timer (the connection is done with)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _on_timer(self, armed_for: float) -> None:
        """The read timer fired: time the waiter out if its deadline passed, else re-arm."""
        self._timer = None
        deadline, waiter = self.deadline, self._waiter
        if deadline is None or waiter is None:
            return  # idle, or a wait without a deadline: the next wait with one arms it
        if deadline > armed_for:  # the deadline of a later request: not yet
            self._timer = self.loop.call_at(deadline, self._on_timer, deadline)
        else:
            _expire(waiter)

    async def _more(self) -> None:
        """Wait for more bytes, or the end (raises `TimeoutError` past the deadline)."""
        if self.eof:
            return
        deadline, timer = self.deadline, self._timer
        if deadline is not None and (timer is None or timer.when() > deadline):
            if timer is not None:  # set for a later deadline than this one: too late
                timer.cancel()
            self._timer = self.loop.call_at(deadline, self._on_timer, deadline)
        waiter = self._waiter = self.loop.create_future()
        try:
            await waiter
        finally:
            self._waiter = None

    async def drain(self, timeout: float | None) -> None:
        """Wait until the transport's write buffer went down (or the connection was lost).

        Rare (a request larger than the socket takes at once): a timer of its own.
        """
        drained = self._drained
        if drained is None:
            return
        timer = None if timeout is None else self.loop.call_later(timeout, _expire, drained)
        try:
            await drained
        finally:
            if timer is not None:
                timer.cancel()

    def _ended(self, incomplete: bool) -> BaseException:
        """What reading past the end raises: the reset, or an incomplete read (`incomplete`)
        or the end of the stream, as anyio's buffered stream raises them."""
        if self.error is not None:
            broken = anyio.BrokenResourceError()
            broken.__cause__ = self.error
            return broken
        return anyio.IncompleteRead() if incomplete else anyio.EndOfStream()

    # -- Receiver ---------------------------------------------------------------------------

    async def receive_until(self, delimiter: bytes, max_bytes: int) -> bytes:
        offset = 0
        while True:
            index = self.buffer.find(delimiter, offset)
            if index >= 0:
                found = bytes(self.buffer[:index])
                del self.buffer[: index + len(delimiter)]
                return found
            if len(self.buffer) >= max_bytes:
                raise anyio.DelimiterNotFound(max_bytes)
            if self.eof:
                raise self._ended(incomplete=True)
            offset = max(len(self.buffer) - len(delimiter) + 1, 0)
            await self._more()

    async def receive_exactly(self, nbytes: int) -> bytes:
        while len(self.buffer) < nbytes:
            if self.eof:
                raise self._ended(incomplete=True)
            await self._more()
        found = bytes(self.buffer[:nbytes])
        del self.buffer[:nbytes]
        return found

    async def receive(self) -> bytes:
        while not self.buffer:
            if self.eof:
                raise self._ended(incomplete=False)
            await self._more()
        found = bytes(self.buffer)
        self.buffer.clear()
        return found


class AsyncioConn:
    """A connection on asyncio's own transport and `_AnswerProtocol`."""

    def __init__(self, transport: asyncio.Transport, protocol: _AnswerProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        # One poller for the connection's life, asked before each reuse. The socket is
        # closed only after the transport is closing, which `stale` checks first.
        self._poller: select.poll | None = None
        sock = transport.get_extra_info("socket")
        if sock is not None:
            self._poller = select.poll()
            self._poller.register(sock, select.POLLIN)

    def stale(self) -> bool:
        protocol = self._protocol
        if protocol.buffer or protocol.eof or self._transport.is_closing():
            return True
        # What the loop has not read yet: an EOF or bytes that came while we were idle.
        return self._poller is None or bool(self._poller.poll(0))

    async def send(self, data: bytes, timeout: float | None) -> None:
        protocol = self._protocol
        self._transport.write(data)  # what the socket does not take now waits in the transport
        await protocol.drain(timeout)
        if protocol.error is not None:  # reset while the request went out
            raise anyio.BrokenResourceError() from protocol.error

    async def answer(self, method: str, timeout: float | None) -> Answer:
        protocol = self._protocol
        protocol.deadline = None if timeout is None else protocol.loop.time() + timeout
        try:
            return await read_answer(protocol, method)
        finally:
            protocol.deadline = None

    async def close(self) -> None:
        self._protocol.disarm()
        self._transport.abort()


# -- anyio (trio) --------------------------------------------------------------------------


class AnyioConn:
    """A connection on an anyio byte stream (TCP, or TLS over it)."""

    def __init__(self, stream: ByteStream, sock: socket.socket | None) -> None:
        self._stream = stream
        self._reader = BufferedByteReceiveStream(stream)
        self._sock = sock

    def stale(self) -> bool:
        return bool(self._reader.buffer) or _readable(self._sock)

    async def send(self, data: bytes, timeout: float | None) -> None:
        with anyio.fail_after(timeout):
            await self._stream.send(data)

    async def answer(self, method: str, timeout: float | None) -> Answer:
        with anyio.fail_after(timeout):
            return await read_answer(self._reader, method)

    async def close(self) -> None:
        await anyio.aclose_forcefully(self._stream)


# -- opening ------------------------------------------------------------------------------


async def connect(host: str, port: int, tls: ssl.SSLContext | None, timeout: float | None) -> Conn:
    """A new connection (TLS when `tls` is given) of the kind the running backend takes.

    Raises:
        TimeoutError: not open within `timeout`.
        OSError, anyio.BrokenResourceError, anyio.EndOfStream: refused, unreachable,
            DNS, TLS (the peer hung up during the handshake, a bad certificate).
    """
    with anyio.fail_after(timeout):
        if _on_asyncio():
            loop = asyncio.get_running_loop()
            transport, protocol = await loop.create_connection(
                _AnswerProtocol, host, port, ssl=tls, server_hostname=host if tls else None
            )
            return AsyncioConn(transport, protocol)
        stream: ByteStream = await anyio.connect_tcp(host, port)
        sock = stream.extra(SocketAttribute.raw_socket, None)
        if tls is not None:
            try:
                stream = await TLSStream.wrap(stream, hostname=host, ssl_context=tls)
            except BaseException:
                await anyio.aclose_forcefully(stream)
                raise
        return AnyioConn(stream, sock)


def _on_asyncio() -> bool:
    try:
        return sniffio.current_async_library() == "asyncio"
    except sniffio.AsyncLibraryNotFoundError:  # pragma: no cover - always called in a loop
        return False
