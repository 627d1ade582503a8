"""`AsyncKeepAliveTransport` (the async client's default) against real peers over loopback.

The peers are our embedded server and the scripted loopback `Peer` of
test_transport.py (a real TCP server that closes while idle, sends stray
bytes, answers chunked, drops a request...), plus a raw socket that answers
with bytes no HTTP server would send. Each test runs on asyncio and trio.
"""

from __future__ import annotations

import dataclasses
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterator

import anyio
import httpx
import pytest

from cuemsg._exceptions import RateLimited
from cuemsg.cueapi import AsyncCueClient, CueClient, TransportError, TransportTimeout
from cuemsg.cueapi import _flows as flows
from cuemsg.cueapi import _routes as routes
from cuemsg.cueapi._async_transport import AsyncKeepAliveTransport
from cuemsg.cueapi._http11 import Reply, parse_head
from cuemsg.testing import RunningServer, free_port, run_server
from tests.cueapi.test_transport import PEER_BODY, PROXY_VARS, Peer, _wait_until

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(db=":memory:") as running:
        yield running


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    server = Peer(request.param)
    try:
        yield server
    finally:
        server.stop()


def _transport(client: AsyncCueClient) -> AsyncKeepAliveTransport:
    transport = client._transport
    assert isinstance(transport, AsyncKeepAliveTransport)
    return transport


def _raw_peer(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A listener that reads one request and writes `answer`, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


async def test_default_transport_unless_a_proxy_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    async with AsyncCueClient("cue_sk_x", "http://127.0.0.1:1") as c:
        assert isinstance(c._transport, AsyncKeepAliveTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    async with AsyncCueClient("cue_sk_x", "http://127.0.0.1:1") as c:
        assert c._transport is None  # httpx's own transport, which honours the proxy


async def test_a_direct_request_gets_the_light_reply(srv: RunningServer) -> None:
    # The async client encodes a call as the sync one does (the code is shared)
    # and reads the answer into the light reply.
    call = routes.claim_next(worker_id="w1", task="t", wait=0.1)
    async with AsyncCueClient(srv.api_key, srv.base_url, timeout=3.0) as c:
        with CueClient(srv.api_key, srv.base_url, timeout=3.0) as sync:
            assert c.encode_call(call) == sync.encode_call(call) is not None
        answer = await c._send(routes.info())
        assert isinstance(answer, Reply) and answer.status_code == 200
        assert (await c.info()).version
    async with AsyncCueClient(srv.api_key, srv.base_url, transport=httpx.AsyncHTTPTransport()) as c:
        assert c.encode_call(call) is None  # not our transport: httpx builds every request


@pytest.mark.parametrize("peer", ["limited"], indirect=True)
async def test_a_429_read_directly_keeps_its_retry_after(peer: Peer) -> None:
    async with AsyncCueClient(base_url=peer.url, max_retries=0) as c:
        with pytest.raises(RateLimited) as info:
            await c.info()
        assert info.value.retry_after == 0.2
        assert (await c.info()).version == "peer"


async def test_keepalive_reuses_one_connection(srv: RunningServer, anyio_backend: str) -> None:
    async with AsyncCueClient(srv.api_key, srv.base_url) as c:
        name = f"aka-{anyio_backend}"
        cue = await c.cues.create(name, payload={"task": name})
        for _ in range(20):
            assert (await c.cues.get(cue.id)).id == cue.id
        await c.cues.fire(cue.id, {"n": 1})
        transport = _transport(c)
        assert transport.connections_opened == 1
        assert transport.idle_count == 1
    assert transport.idle_count == 0  # aclose() closed it


async def test_expired_idle_connection_is_not_reused(srv: RunningServer) -> None:
    transport = AsyncKeepAliveTransport(keepalive_expiry=0.05)
    async with AsyncCueClient(srv.api_key, srv.base_url, transport=transport) as c:
        await c.info()
        await c.info()
        assert transport.connections_opened == 1
        await anyio.sleep(0.1)
        await c.info()
        assert transport.connections_opened == 2


@pytest.mark.parametrize("peer", ["close"], indirect=True)
async def test_a_connection_the_server_closed_while_idle_is_replaced(peer: Peer) -> None:
    async with AsyncCueClient(base_url=peer.url, max_retries=0) as c:
        assert (await c.register("a@x.test"))["api_key"] == "cue_sk_peer"
        _wait_until(lambda: peer.closed == 1)
        assert (await c.register("b@x.test"))["api_key"] == "cue_sk_peer"
    assert _transport(c).connections_opened == 2
    assert [body for _, _, _, body in peer.seen] == [
        b'{"email":"a@x.test"}',
        b'{"email":"b@x.test"}',
    ]


@pytest.mark.parametrize("peer", ["stray"], indirect=True)
async def test_a_connection_with_stray_bytes_is_not_reused(peer: Peer) -> None:
    async with AsyncCueClient(base_url=peer.url, max_retries=0) as c:
        for sent in range(1, 3):
            assert (await c.info()).version == "peer"
            peer.go.release()
            _wait_until(lambda sent=sent: peer.strays == sent)
    assert _transport(c).connections_opened == 2


@pytest.mark.parametrize("peer", ["conn-close"], indirect=True)
async def test_connection_close_answer_is_not_pooled(peer: Peer) -> None:
    async with AsyncCueClient(base_url=peer.url, max_retries=0) as c:
        assert (await c.info()).version == "peer"
        assert _transport(c).idle_count == 0
        assert (await c.info()).version == "peer"
    assert _transport(c).connections_opened == 2


@pytest.mark.parametrize("peer", ["chunked", "gzip"], indirect=True)
async def test_chunked_and_gzip_answers_are_read_whole(peer: Peer) -> None:
    async with AsyncCueClient(base_url=peer.url, max_retries=0) as c:
        assert await c.register("a@x.test") == PEER_BODY
        assert await c.register("b@x.test") == PEER_BODY
    assert _transport(c).connections_opened == 1
    sent = peer.seen[0][2]
    assert sent["host"] == peer.url.removeprefix("http://")
    assert sent["user-agent"].startswith("cuemsg/")
    assert sent["content-type"] == "application/json"


@pytest.mark.parametrize("peer", ["keep"], indirect=True)
async def test_streamed_body_missing_host_and_latin1_headers(peer: Peer) -> None:
    transport = AsyncKeepAliveTransport()

    async def chunks() -> Iterator[bytes]:  # type: ignore[misc]
        for part in (b"ab", b"", b"cd"):
            yield part

    async with httpx.AsyncClient(transport=transport) as http:
        answer = await http.post(f"{peer.url}/stream", content=chunks())
        assert answer.status_code == 200 and answer.json() == PEER_BODY
        assert answer.headers["x-peer"] == "caf\xe9"
        assert answer.http_version == "HTTP/1.1" and answer.reason_phrase == "OK"
        bare = httpx.Request("GET", f"{peer.url}/bare", stream=httpx.ByteStream(b""))
        assert "host" not in bare.headers
        assert (await transport.handle_async_request(bare)).status_code == 200
    assert [(line, body) for _, line, _, body in peer.seen] == [
        ("POST /stream HTTP/1.1", b"abcd"),
        ("GET /bare HTTP/1.1", b""),
    ]
    assert peer.seen[1][2]["host"] == peer.url.removeprefix("http://")
    assert transport.connections_opened == 1


async def test_refused_connect_is_a_transport_error_and_is_retried() -> None:
    port = free_port()
    async with AsyncCueClient("cue_sk_x", f"http://127.0.0.1:{port}", max_retries=1) as c:
        with pytest.raises(TransportError) as info:
            await c.cues.fire("cue_abcdefabcdef", {"a": 1})
        assert c.request_count == 2
    assert not isinstance(info.value, TransportTimeout)
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("peer", ["drop"], indirect=True)
async def test_a_lost_answer_to_a_post_is_not_repeated(peer: Peer) -> None:
    async with AsyncCueClient(base_url=peer.url, max_retries=3) as c:
        with pytest.raises(TransportError) as info:
            await c.register("a@x.test")
        assert c.request_count == 1
        assert _transport(c).idle_count == 0
        assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
        with pytest.raises(TransportError):  # a GET is safe to repeat: it is
            await c.info()
        assert c.request_count == 5


async def test_read_timeout_on_a_long_poll_is_a_transport_timeout(srv: RunningServer) -> None:
    async with AsyncCueClient(srv.api_key, srv.base_url, timeout=0.3) as c:
        got = await c.executions.claim_next(worker_id="w", task="alp-none", wait=0.6)
        assert not got.claimed
        call = dataclasses.replace(
            routes.claim_next(worker_id="w", task="alp-none", wait=2.0), wait=0.0
        )
        started = time.monotonic()
        with pytest.raises(TransportTimeout) as info:
            await c._run(flows.request(c._st, call))
        assert time.monotonic() - started < 1.5
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)
        assert _transport(c).idle_count == 0  # the timed-out connection was not pooled
        assert (await c.info()).version


async def test_a_cancelled_request_closes_its_connection(srv: RunningServer) -> None:
    async with AsyncCueClient(srv.api_key, srv.base_url) as c:
        await c.info()
        assert _transport(c).idle_count == 1
        with anyio.move_on_after(0.2):  # cancels a claim the server holds for 5 s
            await c.executions.claim_next(worker_id="w", task="acancel", wait=5.0)
        assert _transport(c).idle_count == 0  # its answer may still come: never reused
        assert (await c.info()).version
        assert _transport(c).connections_opened == 2


async def test_https_refused_and_failed_handshakes_are_transport_errors() -> None:
    async with AsyncCueClient("cue_sk_x", f"https://127.0.0.1:{free_port()}", max_retries=0) as c:
        with pytest.raises(TransportError) as info:
            await c.info()
        assert isinstance(info.value.__cause__, httpx.ConnectError)
    with socket.create_server(("127.0.0.1", 0)) as silent:  # never answers the handshake
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        async with AsyncCueClient("cue_sk_x", url, timeout=0.2, max_retries=0) as c:
            with pytest.raises(TransportTimeout) as timeout_info:
                await c.info()
    assert isinstance(timeout_info.value.__cause__, httpx.ConnectTimeout)
    listener, thread = _raw_peer(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
    with listener:
        url = f"https://127.0.0.1:{listener.getsockname()[1]}"
        async with AsyncCueClient("cue_sk_x", url, timeout=2.0, max_retries=0) as c:
            with pytest.raises(TransportError) as plain_info:
                await c.info()
        thread.join(5)
    assert isinstance(plain_info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP/1.0 220 hello\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # a header without a colon
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed mid-body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk size
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ],
    ids=["not-http", "header", "short-body", "chunk-size", "two-lengths"],
)
async def test_a_malformed_answer_is_a_protocol_error(answer: bytes) -> None:
    listener, thread = _raw_peer(answer)
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with AsyncCueClient("cue_sk_x", url, max_retries=0) as c:
            with pytest.raises(TransportError) as info:
                await c.info()
        thread.join(5)
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)


async def test_an_answer_ended_by_the_connection_and_a_1xx_before_it() -> None:
    body = b'{"version": "raw", "extensions": []}'
    answer = (
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
    )
    listener, thread = _raw_peer(answer + body)
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        async with AsyncCueClient("cue_sk_x", url, max_retries=0) as c:
            assert (await c.info()).version == "raw"
            assert _transport(c).idle_count == 0  # ended by the close: never pooled
        thread.join(5)


def _peer_that(act: Callable[[socket.socket], object]) -> tuple[socket.socket, threading.Thread]:
    """A listener whose one connection `act` handles, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            act(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


def _reset(conn: socket.socket) -> None:
    """Close with a TCP reset (SO_LINGER 0), not a clean FIN."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


async def _post(url: str, body: bytes, timeout: httpx.Timeout) -> httpx.Response:
    async with httpx.AsyncClient(transport=AsyncKeepAliveTransport(), timeout=timeout) as http:
        return await http.post(url, content=body)


BIG = b"x" * (32 << 20)  # more than loopback's socket buffers take: the write has to wait


async def test_a_body_the_server_does_not_read_is_a_write_timeout() -> None:
    release = threading.Event()
    listener, thread = _peer_that(lambda conn: release.wait(10))  # reads nothing
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with pytest.raises(httpx.WriteTimeout):
            await _post(url, BIG, httpx.Timeout(5.0, write=0.3))
        release.set()
        thread.join(5)


async def test_a_reset_while_the_request_goes_out_is_a_write_error() -> None:
    def read_a_little_then_reset(conn: socket.socket) -> None:
        conn.recv(1024)
        _reset(conn)

    listener, thread = _peer_that(read_a_little_then_reset)
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with pytest.raises(httpx.WriteError):
            await _post(url, BIG, httpx.Timeout(5.0))
        thread.join(5)


async def test_a_reset_in_the_middle_of_an_answer_is_a_read_error() -> None:
    def answer_half_then_reset(conn: socket.socket) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(65536)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
        time.sleep(0.1)  # the client has read what came: the reset meets it waiting for more
        _reset(conn)

    listener, thread = _peer_that(answer_half_then_reset)
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        with pytest.raises(httpx.ReadError):
            await _post(url, b"{}", httpx.Timeout(5.0))
        thread.join(5)


async def test_a_header_with_a_line_break_is_refused_before_sending() -> None:
    transport = AsyncKeepAliveTransport()
    request = httpx.Request("GET", "http://127.0.0.1:1/x", headers={"x-a": "b\r\nx-evil: 1"})
    with pytest.raises(httpx.LocalProtocolError, match="line break"):
        await transport.handle_async_request(request)
    assert transport.connections_opened == 0


async def test_unsupported_scheme_and_missing_host() -> None:
    transport = AsyncKeepAliveTransport()
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "ftp://127.0.0.1/x"))
    with pytest.raises(httpx.UnsupportedProtocol):
        await transport.handle_async_request(httpx.Request("GET", "http:///x"))


def test_parse_head() -> None:
    head = b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\nX-A:  b "
    assert parse_head(head) == (
        b"HTTP/1.1",
        404,
        b"Not Found",
        [(b"Content-Type", b"application/json"), (b"X-A", b"b")],
    )
    with pytest.raises(ValueError, match="status line"):
        parse_head(b"HTTP/2 200 OK")


def _answers(release: threading.Event, *holds: float) -> Callable[[socket.socket], None]:
    """Answer the requests on one connection in turn, each after holding it `holds[i]`
    seconds (or until `release`)."""

    def act(conn: socket.socket) -> None:
        data = b""
        for hold in holds:
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            data = data.split(b"\r\n\r\n", 1)[1]
            release.wait(hold)
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    return act


async def test_read_timeouts_longer_and_shorter_than_the_last_on_one_connection() -> None:
    # On asyncio one timer per connection stays armed across requests (re-armed when it
    # fires before a later request's deadline): each read timeout must still hold.
    release = threading.Event()
    listener, thread = _peer_that(_answers(release, 0, 0, 0.6, 60))
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}/x"
        transport = AsyncKeepAliveTransport()
        async with httpx.AsyncClient(transport=transport) as http:
            short, long = httpx.Timeout(5.0, read=0.2), httpx.Timeout(5.0, read=5.0)
            assert (await http.get(url, timeout=short)).content == b"ok"
            await anyio.sleep(0.4)  # its deadline passes while the connection is idle
            assert (await http.get(url, timeout=short)).content == b"ok"
            # Answered after that short deadline, well within its own long one.
            assert (await http.get(url, timeout=long)).content == b"ok"
            with anyio.fail_after(3):  # not left waiting until the long deadline
                with pytest.raises(httpx.ReadTimeout):
                    await http.get(url, timeout=short)
        assert transport.connections_opened == 1
        release.set()
        thread.join(5)
