"""`KeepAliveTransport` (the sync client's default) against real peers over loopback.

The peers are our embedded server and, for the faults it never shows (a
connection closed while idle, stray bytes, an answer that never comes, a
connection that says `close`), a tiny `socketserver` on loopback that
answers as scripted: a real TCP peer, not a mock.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import itertools
import json
import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuemsg._exceptions import MissingAPIKey, RateLimited
from cuemsg.cueapi import CueClient, TransportError, TransportTimeout
from cuemsg.cueapi import _flows as flows
from cuemsg.cueapi import _routes as routes
from cuemsg.cueapi._base import _default_transport
from cuemsg.cueapi._http11 import RawHeaders, Reply, SocketReader, encode_request, read_answer
from cuemsg.cueapi._transport import KeepAliveTransport
from cuemsg.testing import RunningServer, free_port, run_server

PROXY_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def _no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(db=":memory:") as running:
        yield running


def _transport(client: CueClient) -> KeepAliveTransport:
    transport = client._transport
    assert isinstance(transport, KeepAliveTransport)
    return transport


# -- a scripted peer ----------------------------------------------------------------------

PEER_BODY = {"version": "peer", "extensions": [], "api_key": "cue_sk_peer", "email": "p@x.test"}


class Peer(socketserver.ThreadingTCPServer):
    """A loopback HTTP/1.1 server that answers each request as `mode` says.

    Modes (after reading one request):
    - "keep": answer, keep the connection for more requests;
    - "close": answer as keep-alive, then close the connection (an idle close);
    - "stray": answer, then send bytes no request asked for, keep the connection;
    - "conn-close": answer with `Connection: close` and close;
    - "drop": close without answering;
    - "chunked" / "gzip": answer keep-alive with a chunked / gzip-encoded body;
    - "limited": the first request a 429 with `Retry-After: 0.2`, the rest as "keep".
    """

    daemon_threads = False  # server_close() joins the handlers
    block_on_close = True
    allow_reuse_address = True

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.seen: list[tuple[int, str, dict[str, str], bytes]] = []  # (conn, line, headers, body)
        self.connections = 0
        self.closed = 0  # connections this side closed
        self.strays = 0  # stray answers sent
        self.go = threading.Semaphore(0)  # "stray": released by the test when it may send
        self._lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _PeerHandler)
        self._thread = threading.Thread(target=self.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def shutdown_request(self, request: Any) -> None:
        super().shutdown_request(request)
        with self._lock:
            self.closed += 1

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


class _PeerHandler(socketserver.StreamRequestHandler):
    server: Peer

    def handle(self) -> None:
        self.connection.settimeout(5)
        with self.server._lock:
            self.server.connections += 1
            number = self.server.connections
        try:
            self._serve(number)
        except OSError:  # the client went away, or stayed silent
            return

    def _serve(self, number: int) -> None:
        while True:
            line = self.rfile.readline()
            if not line:
                return
            headers: dict[str, str] = {}
            while (header := self.rfile.readline()) not in (b"\r\n", b""):
                name, _, value = header.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            if headers.get("transfer-encoding") == "chunked":
                body = b""
                while size := int(self.rfile.readline().strip(), 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
            else:
                body = self.rfile.read(int(headers.get("content-length", "0")))
            with self.server._lock:
                self.server.seen.append((number, line.decode("latin-1").strip(), headers, body))
            if not self._answer():
                return

    def _answer(self) -> bool:
        """Answer as the mode says; False when the connection is to be closed."""
        mode = self.server.mode
        if mode == "drop":
            return False
        payload = json.dumps(PEER_BODY).encode()
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Peer: caf\xe9\r\n"
        if mode == "limited" and len(self.server.seen) == 1:
            error = {"error": {"code": "rate_limited", "message": "slow down", "status": 429}}
            payload = json.dumps(error).encode()
            head = "HTTP/1.1 429 Too Many Requests\r\nretry-after: 0.2\r\n"
        if mode == "chunked":
            half = len(payload) // 2
            chunks = b"".join(
                b"%x\r\n%b\r\n" % (len(c), c) for c in (payload[:half], payload[half:])
            )
            self.wfile.write(
                f"{head}Transfer-Encoding: chunked\r\n\r\n".encode("latin-1")
                + chunks
                + b"0\r\n\r\n"
            )
            return True
        if mode == "gzip":
            payload = gzip.compress(payload)
            head += "Content-Encoding: gzip\r\n"
        if mode == "conn-close":
            head += "Connection: close\r\n"
        self.wfile.write(
            f"{head}Content-Length: {len(payload)}\r\n\r\n".encode("latin-1") + payload
        )
        if mode == "stray":
            self.server.go.acquire(timeout=5)  # once the client read the answer
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
            with self.server._lock:
                self.server.strays += 1
        return mode in ("keep", "stray", "gzip", "limited")


@pytest.fixture
def peer(request: pytest.FixtureRequest) -> Iterator[Peer]:
    server = Peer(request.param)
    try:
        yield server
    finally:
        server.stop()


def _wait_until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


# -- the default, and that it sends what httpx would ---------------------------------------


def test_default_transport_is_keepalive_unless_a_proxy_is_set(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with CueClient("cue_sk_x", "http://127.0.0.1:9") as c:
        assert isinstance(c._transport, KeepAliveTransport)
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")
    assert _default_transport() is None
    with CueClient("cue_sk_x", "http://127.0.0.1:9") as c:
        assert c._transport is None  # httpx's own transport, which honours the proxy
    with CueClient("cue_sk_x", "http://127.0.0.1:9", http_client=httpx.Client()) as c:
        assert c._transport is None
        c._http.close()


@pytest.mark.parametrize(
    "call",
    [
        routes.info(),
        routes.get_cue("cue_abcdefabcdef"),
        routes.list_cues(status="active", limit=10, offset=None),
        routes.fire("cue_abcdefabcdef", {"payload_override": {"a": 1}, "idempotency_key": "k"}),
        routes.heartbeat("e-1", worker_id="w1"),
        routes.claim_next(worker_id="w1", task="t", wait=5.0, limit=3),
        routes.delete_cue("cue_abcdefabcdef"),
    ],
    ids=lambda call: f"{call.method} {call.path}",
)
def test_requests_are_built_as_httpx_builds_them(call: routes.Call) -> None:
    with CueClient("cue_sk_x", "http://cueapi.test:8080/", timeout=3.0) as c:
        fast = c._build_request(call)
        slow = c._http.build_request(**c._request_args(call))
    assert fast.method == slow.method
    assert fast.url == slow.url
    assert fast.headers.raw == slow.headers.raw
    assert fast.content == slow.content
    assert fast.extensions == slow.extensions


def _httpx_bytes(c: CueClient, call: routes.Call) -> tuple[bytes, dict[str, float | None]]:
    """What the httpx path writes for `call`: `encode_request` of the built request."""
    request = c._http.build_request(**c._request_args(call))
    return encode_request(request, request.content), request.extensions["timeout"]


@pytest.mark.parametrize(
    "base_url", ["http://cueapi.test:8080/", "http://127.0.0.1:80", "https://api.x.test/base/"]
)
@pytest.mark.parametrize(
    "call",
    [
        routes.info(),
        routes.register("a@x.test"),
        routes.get_cue("cue_abcdefabcdef"),
        routes.fire("cue_abcdefabcdef", {"payload_override": {"a": "\u00e9\n"}}),
        routes.heartbeat("e-1", worker_id="w1"),
        routes.claim_next(worker_id="w1", task="t", wait=5.0, limit=3),
        routes.redrive("e-1"),  # a POST without a body: httpx sends Content-Length: 0
        routes.delete_cue("cue_abcdefabcdef"),
    ],
    ids=lambda call: f"{call.method} {call.path}",
)
def test_calls_are_encoded_as_httpx_would_write_them(base_url: str, call: routes.Call) -> None:
    # The bytes `encode_call` builds without an httpx.Request are the ones the
    # httpx path writes, byte for byte, with the same timeouts.
    with CueClient("cue_sk_x", base_url, timeout=3.0) as c:
        assert c.encode_call(call) == _httpx_bytes(c, call)


@pytest.mark.parametrize(
    ("call", "client_args"),
    [
        (routes.list_cues(status="active", limit=10, offset=None), {}),  # a query string
        (routes.get_cue("a b/\u00e9?"), {}),  # a path httpx quotes
        (routes.get_cue("."), {}),  # a dot segment httpx drops
        (routes.get_cue("x/../y"), {}),
        (routes.heartbeat("e-1", worker_id="w\u00e9"), {}),  # not ASCII
        (routes.info(), {"base_url": "http://u:p@cueapi.test"}),  # httpx's auth
        (routes.info(), {"transport": httpx.HTTPTransport()}),  # not our transport
        (dataclasses.replace(routes.info(), headers={"accept": "text/html"}), {}),  # merged
    ],
    ids=[
        "query",
        "quoted-path",
        "dot-segment",
        "dot-dot-segment",
        "non-ascii-header",
        "userinfo",
        "transport",
        "merged-header",
    ],
)
def test_what_httpx_must_build_is_left_to_it(
    call: routes.Call, client_args: dict[str, Any]
) -> None:
    args = {"base_url": "http://cueapi.test:8080", **client_args}
    with CueClient("cue_sk_x", **args) as c:
        assert c.encode_call(call) is None


def test_request_lines_kept_per_path_stay_right_past_the_cache_size() -> None:
    # The request line is kept per (method, path); past the cache's size it starts over,
    # and a path left to httpx stays left to it when asked again.
    with CueClient("cue_sk_x", "http://cueapi.test:8080/base", timeout=3.0) as c:
        for round_ in range(2):
            for i in range(300):
                call = routes.heartbeat(f"e-{i}", worker_id="w1")
                assert c.encode_call(call) == _httpx_bytes(c, call), (round_, i)
            assert c.encode_call(routes.get_cue(".")) is None
        assert len(c._lines) <= 256


def test_a_call_without_the_key_it_needs_is_refused_before_encoding() -> None:
    with CueClient(base_url="http://cueapi.test:8080") as c:
        assert c.encode_call(routes.info()) is not None  # no key needed
        with pytest.raises(MissingAPIKey):
            c.encode_call(routes.get_cue("cue_abcdefabcdef"))


@given(
    worker=st.text(st.characters(codec="latin-1"), max_size=12),
    path=st.text(st.characters(codec="utf-8"), max_size=12),
    key=st.text(st.characters(codec="ascii"), min_size=1, max_size=12),
)
@settings(max_examples=150)
def test_encoded_calls_match_httpx_or_are_left_to_it(worker: str, path: str, key: str) -> None:
    # Whatever a worker id, a cue id or an API key holds, `encode_call` either
    # writes what httpx writes or leaves the call to httpx, which builds it or
    # raises its error (a line break in a header).
    with CueClient(key, "http://cueapi.test:8080", timeout=3.0) as c:
        for call in (routes.heartbeat("e-1", worker_id=worker), routes.get_cue(path)):
            direct = c.encode_call(call)
            if direct is None:
                continue
            assert direct == _httpx_bytes(c, call)


def test_a_direct_request_gets_the_light_reply_and_uses_one_connection(srv: RunningServer) -> None:
    with CueClient(srv.api_key, srv.base_url) as c:
        answer = c._send(routes.info())
        assert isinstance(answer, Reply) and answer.status_code == 200
        assert answer.headers.get("Content-Type") == "application/json"
        assert answer.headers.get("x-none") is None
        cue = c.cues.create("direct", payload={"task": "direct"})
        assert c.cues.get(cue.id).name == "direct"
        assert c.request_count == 3
    assert _transport(c).connections_opened == 1


@pytest.mark.parametrize("peer", ["limited"], indirect=True)
@pytest.mark.parametrize("retries", [0, 1])
def test_a_429_read_directly_keeps_its_retry_after(peer: Peer, retries: int) -> None:
    # The light reply's headers give Retry-After as httpx's would: the call waits
    # it out and is repeated, or the caller gets it on the error.
    with CueClient(base_url=peer.url, max_retries=retries) as c:
        started = time.monotonic()
        if retries:
            assert c.info().version == "peer"
            assert time.monotonic() - started >= 0.2
        else:
            with pytest.raises(RateLimited) as info:
                c.info()
            assert info.value.retry_after == 0.2
    assert len(peer.seen) == 1 + retries


def test_raw_headers_get_as_httpx_headers_do() -> None:
    raw = [(b"Retry-After", b"0.2"), (b"X-A", b"caf\xe9"), (b"retry-after", b"0.3")]
    ours, theirs = RawHeaders(raw), httpx.Headers(raw)
    for name in ("retry-after", "RETRY-AFTER", "x-a", "missing"):
        assert ours.get(name) == theirs.get(name)
    assert ours.get("missing", "d") == "d"


def test_header_sets_built_once_stay_apart_and_unchanged() -> None:
    # Each set of headers is normalised once and copied: a request's headers
    # never leak into the next request's, nor does another worker's id.
    calls = [routes.heartbeat("e-1", worker_id=f"w{i % 3}") for i in range(7)]
    calls += [routes.info(), routes.heartbeat("e-1", worker_id="w1")]
    with CueClient("cue_sk_x", "http://cueapi.test:8080/", timeout=3.0) as c:
        for call in calls:
            fast = c._build_request(call)
            fast.headers["X-Extra"] = "changed after building"
            slow = c._http.build_request(**c._request_args(call))
            del fast.headers["X-Extra"]
            assert fast.headers.raw == slow.headers.raw
        c.api_key = "cue_sk_other"
        fast = c._build_request(calls[0])
        assert fast.headers["Authorization"] == "Bearer cue_sk_other"


def test_a_closed_client_refuses_as_httpx_does(srv: RunningServer) -> None:
    c = CueClient(srv.api_key, srv.base_url)
    c.info()
    c.close()
    assert _transport(c).idle_count == 0
    with pytest.raises(RuntimeError, match="client has been closed"):
        c.info()


# -- keep-alive ---------------------------------------------------------------------------


def test_keepalive_reuses_one_connection(srv: RunningServer) -> None:
    with CueClient(srv.api_key, srv.base_url) as c:
        cue = c.cues.create("ka", payload={"task": "ka"})
        for _ in range(20):
            assert c.cues.get(cue.id).id == cue.id
        c.cues.fire(cue.id, {"n": 1})
        transport = _transport(c)
        assert transport.connections_opened == 1
        assert transport.idle_count == 1
    assert transport.idle_count == 0  # close() closed it


def test_expired_idle_connection_is_not_reused(srv: RunningServer) -> None:
    transport = KeepAliveTransport(keepalive_expiry=0.05)
    with CueClient(srv.api_key, srv.base_url, transport=transport) as c:
        c.info()
        c.info()
        assert transport.connections_opened == 1
        time.sleep(0.1)
        c.info()
        assert transport.connections_opened == 2


@pytest.mark.parametrize("peer", ["close"], indirect=True)
def test_a_connection_the_server_closed_while_idle_is_replaced(peer: Peer) -> None:
    # register is a POST that is never repeated: a stale connection would lose it.
    with CueClient(base_url=peer.url, max_retries=0) as c:
        transport = _transport(c)
        assert c.register("a@x.test")["api_key"] == "cue_sk_peer"
        assert transport.idle_count == 1  # the peer's answer said nothing of closing
        for done, email in enumerate(("b@x.test", "c@x.test"), start=1):
            _wait_until(lambda done=done: peer.closed == done)  # the peer closed it, idle
            assert c.register(email)["api_key"] == "cue_sk_peer"
    assert transport.connections_opened == 3
    assert [(n, body) for n, _, _, body in peer.seen] == [
        (1, b'{"email":"a@x.test"}'),
        (2, b'{"email":"b@x.test"}'),
        (3, b'{"email":"c@x.test"}'),
    ]


@pytest.mark.parametrize("peer", ["stray"], indirect=True)
def test_a_connection_with_stray_bytes_is_not_reused(peer: Peer) -> None:
    with CueClient(base_url=peer.url, max_retries=0) as c:
        for sent in range(1, 4):
            assert c.info().version == "peer"
            peer.go.release()
            _wait_until(lambda sent=sent: peer.strays == sent)  # they wait in the idle socket
    assert _transport(c).connections_opened == 3
    assert [n for n, *_ in peer.seen] == [1, 2, 3]


@pytest.mark.parametrize("peer", ["conn-close"], indirect=True)
def test_connection_close_answer_is_not_pooled(peer: Peer) -> None:
    with CueClient(base_url=peer.url, max_retries=0) as c:
        assert c.info().version == "peer"
        assert _transport(c).idle_count == 0
        assert c.info().version == "peer"
    assert _transport(c).connections_opened == 2


@pytest.mark.parametrize("peer", ["chunked", "gzip"], indirect=True)
def test_chunked_and_gzip_answers_are_read_whole(peer: Peer) -> None:
    with CueClient(base_url=peer.url, max_retries=0) as c:
        assert c.register("a@x.test") == PEER_BODY
        assert c.register("b@x.test") == PEER_BODY
        accept_encoding = c._http.headers["accept-encoding"]
    assert _transport(c).connections_opened == 1
    sent = peer.seen[0][2]
    assert sent["accept-encoding"] == accept_encoding
    assert sent["host"] == peer.url.removeprefix("http://")
    assert sent["user-agent"].startswith("cuemsg/")
    assert sent["content-type"] == "application/json"


@pytest.mark.parametrize("peer", ["keep"], indirect=True)
def test_streamed_body_missing_host_and_latin1_headers(peer: Peer) -> None:
    transport = KeepAliveTransport()
    with httpx.Client(transport=transport) as http:
        answer = http.post(f"{peer.url}/stream", content=iter([b"ab", b"", b"cd"]))
        assert answer.status_code == 200 and answer.json() == PEER_BODY
        assert answer.headers["x-peer"] == "caf\xe9"
        assert answer.http_version == "HTTP/1.1" and answer.reason_phrase == "OK"
        bare = httpx.Request("GET", f"{peer.url}/bare", stream=httpx.ByteStream(b""))
        assert "host" not in bare.headers
        assert transport.handle_request(bare).status_code == 200
    assert [(line, body) for _, line, _, body in peer.seen] == [
        ("POST /stream HTTP/1.1", b"abcd"),
        ("GET /bare HTTP/1.1", b""),
    ]
    assert peer.seen[1][2]["host"] == peer.url.removeprefix("http://")
    assert transport.connections_opened == 1


def test_server_restart_on_the_same_port(srv: RunningServer) -> None:
    port = free_port()
    with run_server(db=":memory:", port=port) as first:
        c = CueClient(first.api_key, first.base_url)
        c.info()
        assert _transport(c).idle_count == 1
    with run_server(db=":memory:", port=port) as second, c:
        # uvicorn closed the idle connection on shutdown: the next request opens another.
        c.api_key = second.api_key
        assert c.register("again@x.test")["api_key"].startswith("cue_sk_")
        assert c.cues.list().cues == []
        assert _transport(c).connections_opened == 2


# -- errors -------------------------------------------------------------------------------


def test_refused_connect_is_a_transport_error_and_is_retried() -> None:
    port = free_port()  # nothing listens there
    with CueClient("cue_sk_x", f"http://127.0.0.1:{port}", max_retries=1) as c:
        with pytest.raises(TransportError) as info:
            c.cues.fire("cue_abcdefabcdef", {"a": 1})  # unkeyed: still safe, it never left
        assert c.request_count == 2
    assert not isinstance(info.value, TransportTimeout)
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert isinstance(info.value.__cause__.__cause__, ConnectionRefusedError)


def test_unknown_host_is_a_connect_error() -> None:
    url = "http://cuemsg-no-such-host.invalid"
    with CueClient("cue_sk_x", url, max_retries=0) as c, pytest.raises(TransportError) as info:
        c.info()
    assert isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("peer", ["drop"], indirect=True)
def test_a_lost_answer_to_a_post_is_not_repeated(peer: Peer) -> None:
    with CueClient(base_url=peer.url, max_retries=3) as c:
        with pytest.raises(TransportError) as info:
            c.register("a@x.test")
        assert c.request_count == 1
        assert _transport(c).idle_count == 0  # the failed connection was closed
        assert isinstance(info.value.__cause__, (httpx.RemoteProtocolError, httpx.ReadError))
        assert len(peer.seen) == 1
        # A GET is safe to repeat: it is, on a new connection each time.
        with pytest.raises(TransportError):
            c.info()
        assert c.request_count == 5
    _wait_until(lambda: len(peer.seen) == 5)
    assert [n for n, *_ in peer.seen] == [1, 2, 3, 4, 5]


def test_read_timeout_on_a_long_poll_is_a_transport_timeout(srv: RunningServer) -> None:
    with CueClient(srv.api_key, srv.base_url, timeout=0.3) as c:
        # With the wait added to the read timeout, a long-poll longer than `timeout` works.
        started = time.monotonic()
        got = c.executions.claim_next(worker_id="w", task="lp-none", wait=0.6)
        assert not got.claimed and time.monotonic() - started >= 0.5
        # The same claim sent without it: the server holds it past the read timeout.
        call = dataclasses.replace(
            routes.claim_next(worker_id="w", task="lp-none", wait=2.0), wait=0.0
        )
        started = time.monotonic()
        with pytest.raises(TransportTimeout) as info:
            c._run(flows.request(c._st, call))
        assert time.monotonic() - started < 1.5
        assert isinstance(info.value.__cause__, httpx.ReadTimeout)
        assert _transport(c).idle_count == 0  # the timed-out connection was not pooled
        assert c.info().version  # and the next request opens a fresh one


def test_https_refused_and_failed_handshakes_are_transport_errors() -> None:
    port = free_port()
    with CueClient("cue_sk_x", f"https://127.0.0.1:{port}", max_retries=0) as c:
        with pytest.raises(TransportError) as info:
            c.info()
        assert isinstance(info.value.__cause__, httpx.ConnectError)
    # A listener that never answers the TLS handshake: the connect timeout covers it.
    with socket.create_server(("127.0.0.1", 0)) as silent:
        url = f"https://127.0.0.1:{silent.getsockname()[1]}"
        c = CueClient("cue_sk_x", url, timeout=0.2, max_retries=0)
        with c, pytest.raises(TransportTimeout) as timeout_info:
            c.info()
    assert isinstance(timeout_info.value.__cause__, httpx.ConnectTimeout)


def test_https_to_a_plain_http_peer_fails_the_handshake() -> None:
    with socket.create_server(("127.0.0.1", 0)) as plain:

        def answer_in_plain_http() -> None:
            conn, _ = plain.accept()
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_in_plain_http)
        thread.start()
        url = f"https://127.0.0.1:{plain.getsockname()[1]}"
        c = CueClient("cue_sk_x", url, timeout=2.0, max_retries=0)
        with c, pytest.raises(TransportError) as info:
            c.info()
        thread.join()
    assert isinstance(info.value.__cause__, httpx.ConnectError)
    assert isinstance(info.value.__cause__.__cause__, OSError)  # ssl.SSLError and kin


def test_unsupported_scheme() -> None:
    transport = KeepAliveTransport()
    with pytest.raises(httpx.UnsupportedProtocol):
        transport.handle_request(httpx.Request("GET", "ftp://127.0.0.1/x"))


# -- threads ------------------------------------------------------------------------------


def test_one_client_many_threads(srv: RunningServer) -> None:
    threads, per_thread = 16, 50
    with CueClient(srv.api_key, srv.base_url) as c:
        cues = [c.cues.create(f"th-{i}", payload={"task": "th", "n": i}) for i in range(threads)]
        errors: list[BaseException] = []
        start = threading.Barrier(threads)

        def work(i: int) -> None:
            try:
                start.wait()
                for _ in range(per_thread):
                    got = c.cues.get(cues[i].id)
                    assert got.id == cues[i].id and got.payload == {"task": "th", "n": i}
            except BaseException as exc:  # pragma: no cover - reported below
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert errors == []
        transport = _transport(c)
        assert 1 <= transport.connections_opened <= threads
        assert transport.idle_count == transport.connections_opened


def test_pool_keeps_at_most_max_idle(srv: RunningServer) -> None:
    transport = KeepAliveTransport(max_idle=2)
    with httpx.Client(transport=transport) as http:
        barrier = threading.Barrier(6)

        def work() -> None:
            barrier.wait()
            for _ in range(10):
                assert http.get(f"{srv.base_url}/v1/info").status_code == 200

        workers = [threading.Thread(target=work) for _ in range(6)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert transport.idle_count <= 2
    assert transport.idle_count == 0


def _raw_answer(answer: bytes) -> tuple[socket.socket, threading.Thread]:
    """A listener that reads one request, writes `answer` as it is, then closes."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread


@pytest.mark.parametrize(
    "answer",
    [
        b"SMTP/1.0 220 hello\r\n\r\n",  # not HTTP
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",  # a header without a colon
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # closed mid-body
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # a bad chunk size
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n",  # a head too long
    ],
    ids=["not-http", "header", "short-body", "chunk-size", "two-lengths", "bad-length", "long"],
)
def test_a_malformed_answer_is_a_protocol_error(answer: bytes) -> None:
    listener, thread = _raw_answer(answer)
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with CueClient("cue_sk_x", url, max_retries=0) as c, pytest.raises(TransportError) as info:
            c.info()
        thread.join(5)
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert _transport(c).idle_count == 0


def test_an_answer_ended_by_the_connection_and_a_1xx_before_it() -> None:
    body = b'{"version": "raw", "extensions": []}'
    head = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n"
    listener, thread = _raw_answer(head + body)
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with CueClient("cue_sk_x", url, max_retries=0) as c:
            assert c.info().version == "raw"
            assert _transport(c).idle_count == 0  # ended by the close: never pooled
        thread.join(5)


@pytest.mark.parametrize("value", ["b\r\nx-evil: 1", "b\rc", "b\nc", "\r\n"])
def test_a_header_with_a_line_break_is_refused_before_sending(value: str) -> None:
    transport = KeepAliveTransport()
    headers = {"x-before": "1", "x-a": value, "x-after": "2"}
    request = httpx.Request("GET", "http://127.0.0.1:1/x", headers=headers)
    with pytest.raises(httpx.LocalProtocolError, match="line break"):
        transport.handle_request(request)
    assert transport.connections_opened == 0


@pytest.mark.parametrize("encoding", [None, "gzip"])
def test_a_whole_answer_is_left_as_httpx_leaves_one_it_read(encoding: str | None) -> None:
    from cuemsg.cueapi._http11 import whole_response

    body = b'{"ok": true, "pad": "' + b"x" * 300 + b'"}'
    wire = body if encoding is None else gzip.compress(body)
    headers = [(b"Content-Type", b"application/json"), (b"Content-Length", b"%d" % len(wire))]
    if encoding is not None:
        headers.append((b"Content-Encoding", encoding.encode()))
    request = httpx.Request("GET", "http://cueapi.test/v1/info")
    ours = whole_response(request, (b"HTTP/1.1", 200, b"OK", headers), wire)
    theirs = httpx.Response(
        200,
        headers=headers,
        stream=httpx.ByteStream(wire),
        extensions={"http_version": b"HTTP/1.1", "reason_phrase": b"OK"},
        request=request,
    )
    theirs.read()
    for response in (ours, theirs):
        assert response.content == body and response.read() == body
        assert response.is_stream_consumed and response.is_closed
        assert b"".join(response.iter_bytes()) == body
        assert response.json() == {"ok": True, "pad": "x" * 300}
        with pytest.raises(httpx.StreamConsumed):
            list(response.iter_raw())
    assert ours.num_bytes_downloaded == theirs.num_bytes_downloaded == len(wire)
    assert ours.headers.raw == theirs.headers.raw
    assert ours.extensions == theirs.extensions and ours.http_version == "HTTP/1.1"


class _LineByLine(SocketReader):
    """A reader that never takes a head in one step: every head read line by line."""

    __slots__ = ()

    def head(self) -> bytes | None:
        return None


def _chunked_recv(data: bytes, step: int) -> Any:
    """A `recv` that hands out `data` `step` bytes at a time, then b"" (the end)."""
    parts = [data[i : i + step] for i in range(0, len(data), step)]
    return lambda _size: parts.pop(0) if parts else b""


def _read(reader: type[SocketReader], data: bytes, step: int) -> Any:
    fp = reader(_chunked_recv(data, step))
    try:
        return read_answer(fp, "GET"), fp.leftover
    except Exception as exc:
        return type(exc), str(exc)


_ANSWERS = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nA: b\r\n\r\nhi",
    b"HTTP/1.1 200 OK\nContent-Length: 2\nA: b\n\nhi",  # bare LFs
    b"HTTP/1.1 200 OK\r\nA: b\nC: d\r\nContent-Length: 2\r\n\r\nhi",  # a bare LF inside
    b"HTTP/1.1 200 OK\r\r\nA: b\r\r\nContent-Length: 2\r\n\r\nhi",  # CR before CRLF
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\r\nhi",  # a blank line with two CRs
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\n\r\n\r\nhi",  # a bare-LF blank line
    b"\r\nHTTP/1.1 200 OK\r\n\r\n",  # an empty head
    b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 8170 + b"\r\nContent-Length: 0\r\n\r\n",  # fits
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 8200 + b"\r\nContent-Length: 0\r\n\r\n",  # too long
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: " + b"a" * 8000 + b"\r\n" + b"X: y\r\n" * 9000 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\nT: 1\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi plus stray bytes",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhi",  # closed short of the body
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n",  # closed mid-head
    b"HTTP/1.0 200 OK\r\n\r\nto the end",
]


@pytest.mark.parametrize("answer", _ANSWERS)
@pytest.mark.parametrize("step", [1, 3, 100, 1 << 20])
def test_a_head_taken_in_one_step_reads_as_line_by_line(answer: bytes, step: int) -> None:
    # The one-step head is a shortcut: what it reads, and every error, must be what the
    # line-by-line reader (the buffered file's rules) gives, however the bytes arrive.
    assert _read(SocketReader, answer, step) == _read(_LineByLine, answer, step)


def test_an_answer_with_bytes_after_it_is_not_pooled() -> None:
    body = b'{"version": "raw", "extensions": []}'
    answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%bjunk" % (len(body), body)
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(answer)  # one write: the junk comes in the answer's read
            done.wait(5)  # the connection stays open: only the junk says not to reuse it

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    with listener:
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        with CueClient("cue_sk_x", url, max_retries=0) as c:
            assert c.info().version == "raw"
            assert _transport(c).idle_count == 0
        done.set()
        thread.join(5)


@pytest.mark.parametrize("answer", _ANSWERS)
@pytest.mark.parametrize("step", [1, 7, 1 << 20])
def test_the_socket_reader_reads_lines_as_a_buffered_file_does(answer: bytes, step: int) -> None:
    ours, theirs = SocketReader(_chunked_recv(answer, step)), io.BufferedReader(io.BytesIO(answer))
    for limit in itertools.cycle([8193, 5, 1, 40]):
        line = ours.readline(limit)
        assert line == theirs.readline(limit)
        assert ours.read(3) == theirs.read(3)
        if not line:
            break
    assert ours.read() == theirs.read() == b""


@pytest.mark.parametrize("step", [1000, 65536, 1 << 22])
def test_a_long_body_read_in_pieces(step: int) -> None:
    body = bytes(range(256)) * 12_000  # 3 MB
    head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body)
    (_, content, keep), leftover = _read(SocketReader, head + body + b"more", step)
    assert content == body and leftover and not keep
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n%b\r\n0\r\n\r\n"
    (_, content, keep), leftover = _read(SocketReader, chunked % (len(body), body), step)
    assert content == body and keep and not leftover
    (_, content, keep), _ = _read(SocketReader, b"HTTP/1.0 200 OK\r\n\r\n" + body, step)
    assert content == body and not keep
