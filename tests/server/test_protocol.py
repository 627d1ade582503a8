"""`HotProtocol` (cuemsg/server/protocol.py): uvicorn's protocol answering the hot
lane's requests itself, over real sockets on loopback.

Each test speaks raw HTTP/1.1 on one socket, so what is on the wire (headers,
keep-alive, pipelining, `connection: close`) is what is checked, and reads the
protocol's count of the requests it answered itself to tell its path from
uvicorn's."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import uvicorn
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route
from uvicorn.protocols.utils import get_path_with_query_string

from cuemsg.server import protocol
from cuemsg.server.app import create_app
from cuemsg.server.lane import App, Lane
from cuemsg.server.protocol import HotProtocol, hot_protocol_fits
from cuemsg.server.run import Uvicorn
from cuemsg.server.settings import ServerSettings
from cuemsg.testing import RunningServer, free_port, run_server
from tests.server.test_access import access_lines


class Wire:
    """One keep-alive connection: raw requests out, whole answers in."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def answer(self) -> tuple[int, dict[str, str], bytes]:
        """The next answer: status, headers (lower-case names), body (by content-length)."""
        while b"\r\n\r\n" not in self.buffer:
            self._more()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            assert name.lower() not in headers, f"{name} twice in {head!r}"
            headers[name.lower()] = value.strip()
        size = int(headers["content-length"])
        while len(self.buffer) < size:
            self._more()
        body, self.buffer = self.buffer[:size], self.buffer[size:]
        return status, headers, body

    def closed(self) -> bool:
        """Whether the server closed the connection (nothing more is sent on it)."""
        return self.buffer == b"" and self.sock.recv(1) == b""

    def _more(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed mid-answer after {self.buffer!r}")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def request(
    method: str, path: str, key: str, body: Any = None, *, extra: str = "", version: str = "1.1"
) -> bytes:
    data = b"" if body is None else json.dumps(body).encode()
    head = (
        f"{method} {path} HTTP/{version}\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}\r\n"
    )
    return head.encode() + data


def answered(srv: RunningServer) -> int:
    """Requests the server's `HotProtocol` answered itself so far."""
    cls = srv._server.config.http_protocol_class
    assert issubclass(cls, HotProtocol)
    return cls.answered


@pytest.fixture
def srv() -> Iterator[RunningServer]:
    with run_server(host="127.0.0.1") as running:
        yield running


@pytest.fixture
def wire(srv: RunningServer) -> Iterator[Wire]:
    w = Wire(srv.port)
    yield w
    w.close()


def _cue(wire: Wire, key: str) -> str:
    wire.send(request("POST", "/v1/cues", key, {"name": "box", "transport": "worker"}))
    status, _, body = wire.answer()
    assert status == 201, body
    return str(json.loads(body)["id"])


def test_the_message_path_is_answered_by_the_protocol_on_one_connection(
    srv: RunningServer, wire: Wire
) -> None:
    cue = _cue(wire, srv.api_key)  # not hot: uvicorn's path
    before = answered(srv)
    wire.send(request("POST", f"/v1/cues/{cue}/fire", srv.api_key, {"payload_override": {"n": 1}}))
    status, headers, body = wire.answer()
    assert status == 200, body
    assert headers["content-type"] == "application/json"
    assert "date" in headers and headers["server"] == "uvicorn"  # uvicorn's defaults kept
    assert "connection" not in headers
    fired = json.loads(body)["id"]
    wire.send(request("POST", "/v1/executions/claim", srv.api_key, {"worker_id": "w"}))
    status, _, body = wire.answer()
    assert status == 200 and json.loads(body)["execution_id"] == fired, body
    wire.send(request("GET", "/health", srv.api_key))  # not hot, same connection
    assert wire.answer()[0] == 200
    wire.send(request("GET", f"/v1/executions/{fired}", srv.api_key))
    status, _, body = wire.answer()
    assert status == 200 and json.loads(body)["status"] == "delivering"
    assert answered(srv) - before == 3


def test_pipelined_requests_are_answered_in_order(srv: RunningServer, wire: Wire) -> None:
    cue = _cue(wire, srv.api_key)
    before = answered(srv)
    fire = request("POST", f"/v1/cues/{cue}/fire", srv.api_key, {})
    # hot, hot, not hot, hot: sent at once, so each waits for the one before it
    wire.send(fire + fire + request("GET", "/health", srv.api_key) + fire)
    ids = []
    for expect_health in (False, False, True, False):
        status, _, body = wire.answer()
        assert status == 200, body
        doc = json.loads(body)
        assert ("requests" in doc) is expect_health
        if not expect_health:
            ids.append(doc["id"])
    assert len(set(ids)) == 3
    assert 1 <= answered(srv) - before <= 3  # the first hot one at least: no queue yet


@pytest.mark.parametrize(
    "how",
    [
        "query",  # a query string: handlers never read one, but uvicorn's path parses it
        "percent",  # a %-encoded path: uvicorn decodes it
        "http10",
        "forwarded",  # X-Forwarded-For: uvicorn's proxy layer rewrites the client
        "chunked",
    ],
)
def test_requests_the_protocol_leaves_to_uvicorn_are_answered_the_same(
    srv: RunningServer, wire: Wire, how: str
) -> None:
    cue = _cue(wire, srv.api_key)
    path, extra, version = f"/v1/cues/{cue}/fire", "", "1.1"
    body = json.dumps({"payload_override": {"how": how}}).encode()
    if how == "query":
        path += "?x=1"
    elif how == "percent":
        path = f"/v1/cues/{cue[:2]}%{ord(cue[2]):02X}{cue[3:]}/fire"
    elif how == "http10":
        version, extra = "1.0", "Connection: keep-alive\r\n"
    elif how == "forwarded":
        extra = "X-Forwarded-For: 10.1.2.3\r\n"
    before = answered(srv)
    if how == "chunked":
        text = (
            f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {srv.api_key}\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        wire.send(text.encode() + b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
    else:
        head = request("POST", path, srv.api_key, extra=extra, version=version)
        wire.send(head.replace(b"Content-Length: 0", b"Content-Length: %d" % len(body)) + body)
    status, _, answer = wire.answer()
    assert status == 200, answer
    assert answered(srv) == before
    other = Wire(srv.port)  # uvicorn closes an HTTP/1.0 connection after its answer
    other.send(request("GET", f"/v1/executions/{json.loads(answer)['id']}", srv.api_key))
    status, _, answer = other.answer()
    other.close()
    assert json.loads(answer)["payload"]["how"] == how, answer


def test_a_body_declared_over_the_limit_gets_uvicorns_path_and_a_413() -> None:
    with run_server(host="127.0.0.1", max_body_bytes=100) as srv:
        wire = Wire(srv.port)
        cue = _cue(wire, srv.api_key)
        before = answered(srv)
        fire = f"/v1/cues/{cue}/fire"
        wire.send(request("POST", fire, srv.api_key, {"payload_override": {"x": "x" * 200}}))
        status, _, body = wire.answer()
        assert status == 413 and b"over the limit of 100 bytes" in body
        assert answered(srv) == before
        wire.send(request("POST", fire, srv.api_key, {"payload_override": {"x": "x" * 20}}))
        assert wire.answer()[0] == 200  # the connection goes on, on the protocol's path
        assert answered(srv) == before + 1
        wire.close()


def test_connection_close_is_said_and_done(srv: RunningServer, wire: Wire) -> None:
    cue = _cue(wire, srv.api_key)
    wire.send(request("GET", f"/v1/cues/{cue}", srv.api_key, extra="Connection: close\r\n"))
    status, headers, body = wire.answer()
    assert status == 200 and json.loads(body)["id"] == cue
    assert headers["connection"] == "close"
    assert wire.closed()


def test_errors_on_the_hot_path_keep_the_connection(srv: RunningServer, wire: Wire) -> None:
    before = answered(srv)
    wire.send(request("POST", "/v1/cues/cue_nope/fire", srv.api_key, {}))
    status, _, body = wire.answer()
    assert status == 404 and json.loads(body)["error"]["code"] == "cue_not_found", body
    wire.send(request("POST", "/v1/executions/claim", "wrong-key", {"worker_id": "w"}))
    status, _, body = wire.answer()
    assert status == 401 and json.loads(body)["error"]["code"] == "invalid_api_key"
    wire.send(request("GET", "/v1/cues/cue_nope", srv.api_key))
    assert wire.answer()[0] == 404
    assert answered(srv) - before == 3


def test_the_access_log_has_the_same_line_for_a_hot_request() -> None:
    with run_server(host="127.0.0.1", access_log=True) as srv, access_lines() as lines:
        wire = Wire(srv.port)
        cue = _cue(wire, srv.api_key)
        before = answered(srv)
        wire.send(request("GET", f"/v1/cues/{cue}", srv.api_key))
        wire.send(request("GET", "/v1/cues/a!b", srv.api_key))
        assert [wire.answer()[0], wire.answer()[0]] == [200, 404]
        wire.close()
        assert answered(srv) - before == 2
    hot = [line for line in lines.lines if '"GET /v1/cues/' in line]
    assert len(hot) == 2, lines.lines
    assert hot[0].endswith(f'- "GET /v1/cues/{cue} HTTP/1.1" 200'), hot
    # written as the installed uvicorn writes it (0.54 quotes the path, 0.55 logs it raw)
    scope: Any = {"path": "/v1/cues/a!b", "raw_path": b"/v1/cues/a!b", "query_string": b""}
    odd = get_path_with_query_string(scope)
    assert hot[1].endswith(f'- "GET {odd} HTTP/1.1" 404'), hot
    assert all(line.startswith("127.0.0.1:") for line in hot)
    assert srv.api_key not in "\n".join(lines.lines)  # the redaction filter applies


def test_a_parked_claim_woken_again_and_again_still_answers(srv: RunningServer) -> None:
    """An agent-filtered claim is woken by every fire of its task and checks each time
    whether its client hung up (one step of `receive`): the checks must not leave the
    request unable to check again (PostgreSQL wakes every parked claim this way)."""
    wire = Wire(srv.port)
    wire.send(
        request(
            "POST",
            "/v1/cues",
            srv.api_key,
            {"name": "t", "transport": "worker", "payload": {"task": "t"}},
        )
    )
    status, _, body = wire.answer()
    assert status == 201, body
    cue = json.loads(body)["id"]
    parked = Wire(srv.port)
    claim = {"worker_id": "w", "task": "t", "agent": "a1", "wait": 10}
    parked.send(request("POST", "/v1/executions/claim", srv.api_key, claim))
    time.sleep(0.2)
    for agent in ("a2", "a3", "a1"):  # two wake it for nothing, the third is its
        wire.send(
            request(
                "POST", f"/v1/cues/{cue}/fire", srv.api_key, {"payload_override": {"agent": agent}}
            )
        )
        status, _, body = wire.answer()
        assert status == 200, body
        time.sleep(0.05)
    status, _, body = parked.answer()
    assert status == 200, body
    wire.send(request("GET", f"/v1/executions/{json.loads(body)['execution_id']}", srv.api_key))
    assert json.loads(wire.answer()[2])["payload"]["agent"] == "a1"
    parked.close()
    wire.close()


@contextlib.contextmanager
def _serve(app: Starlette, **options: Any) -> Iterator[tuple[int, type[asyncio.Protocol]]]:
    """`app` under `Uvicorn` in a thread, as `run_server` runs the real one."""
    port = free_port()
    options = {"lifespan": "off", **options}
    server = Uvicorn(app, host="127.0.0.1", port=port, loop="asyncio", **options)
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "did not start"
        time.sleep(0.005)
    try:
        yield port, server.config.http_protocol_class
    finally:
        server.should_exit = True
        thread.join(10)


def _app_answering(endpoint: Any) -> App:
    """An app whose only route is a hot one (`POST /v1/fire`) answered by `endpoint`."""
    app = App(routes=[Route("/v1/fire", endpoint, methods=["POST"])])
    app.lane = Lane(app.routes, None)
    settings = SimpleNamespace(max_body_bytes=1000)
    app.state.server = SimpleNamespace(settings=settings, drain=lambda: None)
    return app


@pytest.mark.parametrize("answer", ["streamed", "bad header"])
def test_an_answer_the_protocol_cannot_write_is_a_500_that_closes(
    answer: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Hot handlers answer whole bodies with headers of ours; were one not to, the
    client gets uvicorn's 500 and the connection ends (as uvicorn does for an app error)."""

    async def endpoint(request: Request) -> Response:
        if answer == "streamed":
            return StreamingResponse(iter([b"x"]))
        return Response(b"{}", headers={"x-bad": "a\r\nset-cookie: evil=1"})

    uvicorn_log = logging.getLogger("uvicorn.error")  # uvicorn's, not propagated
    with _serve(_app_answering(endpoint)) as (port, cls):
        uvicorn_log.addHandler(caplog.handler)  # after uvicorn set up its logging
        assert issubclass(cls, HotProtocol)
        wire = Wire(port)
        wire.send(request("POST", "/v1/fire", "k", {}))
        status, headers, body = wire.answer()
        assert (status, body) == (500, b"Internal Server Error")
        assert headers["connection"] == "close" and "set-cookie" not in headers
        assert wire.closed()
        wire.close()
    uvicorn_log.removeHandler(caplog.handler)
    assert "Exception in ASGI application" in caplog.text


def test_a_request_body_reaches_the_endpoint_whole() -> None:
    seen: list[bytes] = []

    async def endpoint(request: Request) -> Response:
        seen.append(await request.body())
        return Response(b"ok", media_type="text/plain")

    with _serve(_app_answering(endpoint)) as (port, cls):
        assert issubclass(cls, HotProtocol)
        wire = Wire(port)
        body = b'{"x": "' + b"y" * 900 + b'"}'
        head = b"POST /v1/fire HTTP/1.1\r\nHost: h\r\nContent-Length: %d\r\n\r\n" % len(body)
        wire.sock.sendall(head + body[:300])  # the body in three segments
        time.sleep(0.05)
        wire.sock.sendall(body[300:600])
        time.sleep(0.05)
        wire.sock.sendall(body[600:])
        assert wire.answer()[0] == 200
        wire.close()
        assert seen == [body] and cls.answered == 1


def test_other_uvicorn_releases_keep_uvicorns_protocol(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The protocol reaches into uvicorn's internals, so only releases it was tested
    with get it (the version is patched: the condition cannot be made otherwise)."""
    # the uvicorn installed here is one of them; when a new release fails this, check
    # its HttpToolsProtocol against HotProtocol's overrides and add it to TESTED_UVICORN
    assert hot_protocol_fits(), uvicorn.__version__
    app = create_app(ServerSettings(db=":memory:"))
    with caplog.at_level(logging.WARNING, "cuemsg.server"):
        chosen = Uvicorn(app).config.http
    assert isinstance(chosen, type) and issubclass(chosen, HotProtocol)
    assert not caplog.records
    monkeypatch.setattr(uvicorn, "__version__", "0.99.0")
    assert not protocol.hot_protocol_fits()
    with caplog.at_level(logging.WARNING, "cuemsg.server"):
        assert Uvicorn(app).config.http == "auto"
    assert "uvicorn 0.99.0 is not a release" in caplog.text  # the operator learns why


# Requests on the hot routes whose answers depend only on the request (errors, and
# reads of what does not exist): the same bytes from either protocol.
_HOT_PATHS = [
    ("POST", "/v1/cues/{cue}/fire"),
    ("POST", "/v1/cues/cue_missing/fire"),
    ("POST", "/v1/fire"),
    ("POST", "/v1/executions/claim"),
    ("POST", "/v1/executions/exec_missing/claim"),
    ("POST", "/v1/executions/exec_missing/outcome"),
    ("POST", "/v1/executions/outcomes"),
    ("POST", "/v1/executions/exec_missing/heartbeat"),
    ("GET", "/v1/cues/cue_missing"),
    ("GET", "/v1/executions/exec_missing"),
]
_BODIES = st.one_of(
    st.sampled_from(
        [
            b"",
            b"{",
            b"[]",
            b"null",
            b'{"worker_id": ""}',
            b'{"worker_id": "w", "wait": 99}',
            b'{"worker_id": "w", "limit": 0}',
            b'{"success": "yes"}',
            b'{"payload_override": 5}',
            b'{"fires": []}',
            b'{"outcomes": [{"execution_id": "x"}]}',
            b'{"unknown": 1}',
            b'{"a": ' * 40 + b"1" + b"}" * 40,
        ]
    ),
    st.binary(max_size=40),
)


@pytest.fixture(scope="module")
def twin_servers() -> Iterator[list[tuple[Wire, str, str, int]]]:
    """The same app twice, one served by `HotProtocol`, one by uvicorn's own
    httptools protocol; for each, a connection, its key and a cue id to fire at."""
    with contextlib.ExitStack() as stack:
        twins = []
        for http in (None, "httptools"):
            app = create_app(ServerSettings(db=":memory:", host="127.0.0.1", max_body_bytes=200))
            options = {} if http is None else {"http": http}
            port, cls = stack.enter_context(_serve(app, lifespan="on", **options))
            assert issubclass(cls, HotProtocol) is (http is None)
            wire = Wire(port)
            wire.send(request("POST", "/v1/auth/register", "", {"email": "t@example.com"}))
            key = json.loads(wire.answer()[2])["api_key"]
            twins.append((wire, key, _cue(wire, key), port))
        yield twins
        for twin in twins:
            twin[0].close()


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    route=st.sampled_from(_HOT_PATHS),
    body=_BODIES,
    auth=st.sampled_from(["key", "wrong", "none"]),
    close=st.booleans(),
)
def test_the_protocol_answers_as_uvicorns_own_does(
    twin_servers: list[tuple[Wire, str, str, int]],
    route: tuple[str, str],
    body: bytes,
    auth: str,
    close: bool,
) -> None:
    answers = []
    for i, (wire, key, cue, port) in enumerate(twin_servers):
        method, template = route
        head = f"{method} {template.format(cue=cue)} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if auth != "none":
            head += f"Authorization: Bearer {key if auth == 'key' else 'nope'}\r\n"
        head += f"Content-Length: {len(body)}\r\n"
        if close:
            head += "Connection: close\r\n"
        wire.send(head.encode() + b"\r\n" + body)
        status, headers, answer = wire.answer()
        if close:
            assert wire.closed()
            wire.close()
            twin_servers[i] = (Wire(port), key, cue, port)
        headers.pop("date")
        if status == 200:  # a fire made an execution: its id and times are the server's
            answer = b"<made>"
        answers.append((status, headers, answer.replace(cue.encode(), b"<cue>")))
    assert answers[0] == answers[1]
