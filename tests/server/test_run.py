"""How `cuemsg serve` listens and runs: its socket (`bind`) and its event loop (`run_loop`)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from cuemsg.server.run import bind


def test_accepted_connections_get_tcp_nodelay() -> None:
    """A connection accepted on the bound socket sends small writes at once (no Nagle).

    asyncio turns TCP_NODELAY on only for sockets whose proto says TCP; with
    proto 0 every keep-alive response waited ~40 ms for the client's delayed ACK.
    """
    listener = bind("127.0.0.1", 0)
    port = listener.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(accepted, sock=listener)
        async with server:
            _reader, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert listener.proto == socket.IPPROTO_TCP
    assert seen and seen[0] != 0


def test_bind_refuses_an_address_in_use() -> None:
    first = bind("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            bind("127.0.0.1", first.getsockname()[1])
    finally:
        first.close()


def test_run_loop_runs_on_uvloop_when_installed() -> None:
    from cuemsg.server.run import run_loop

    uvloop = pytest.importorskip("uvloop", reason="uvloop has no build for this platform (Windows)")

    async def which() -> type:
        return type(asyncio.get_running_loop())

    assert issubclass(run_loop(which()), uvloop.Loop)


def test_run_loop_passes_the_coroutines_error_on() -> None:
    from cuemsg.server.run import run_loop

    async def fail() -> None:
        raise LookupError("from the coroutine")

    with pytest.raises(LookupError, match="from the coroutine"):
        run_loop(fail())


def test_free_port_is_outside_the_range_of_outgoing_connections() -> None:
    """A client's connection cannot take the port between the check and the server's bind."""
    from cuemsg.testing import _ephemeral_range, free_port

    low, _ = _ephemeral_range()
    port = free_port()
    assert 1024 <= port < low
    with socket.socket() as sock:  # and it is free now
        sock.bind(("127.0.0.1", port))


def test_a_reverse_proxy_on_loopback_passes_the_clients_address() -> None:
    """uvicorn's proxy-headers layer stays on (the hot lane does not need it, registration
    does): behind nginx on the same host every request comes from 127.0.0.1, and only
    `X-Forwarded-For` tells registration's per-address limit who is asking."""
    import httpx

    from cuemsg.testing import run_server

    with run_server(registration_rate=1) as srv:
        url = f"{srv.base_url}/v1/auth/register"
        forwarded = {"X-Forwarded-For": "203.0.113.9"}
        statuses = [
            httpx.post(url, json={"email": "a@example.com"}, headers=forwarded).status_code
            for _ in range(2)
        ]
        assert statuses == [201, 429]
        # Loopback itself is not counted (it can read the development key anyway).
        assert httpx.post(url, json={"email": "b@example.com"}).status_code == 201
