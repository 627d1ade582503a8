"""The hot lane (`cuemsg/server/lane.py`) answers the message path's routes as
Starlette's stack did: the same route for every path, the same answers (404,
405 with `Allow`, 401, 413, 421, 500/503/507), metrics by route template, the
feed bumped on writes, and the keep-alive connection kept after an error.

Each answer is compared with the one the same app gives through Starlette's
own stack (`Starlette.__call__`, which the lane is in front of)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import closing
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Match, Route
from starlette.types import Receive, Scope, Send

from cuemsg import StorageError
from cuemsg.server.app import create_app
from cuemsg.server.lane import HOT, App
from cuemsg.server.settings import ServerSettings
from cuemsg.testing import run_server
from tests.server.conftest import error_of
from tests.server.test_errors import _local_address

Clients = tuple[App, httpx.AsyncClient, httpx.AsyncClient]


@contextlib.asynccontextmanager
async def _clients(tmp_path: Path, **settings: Any) -> AsyncIterator[Clients]:
    """The app (bound to loopback: the Host guard is on), a client through the lane and
    one through Starlette's stack alone, both with a registered key."""
    app = create_app(ServerSettings(db=str(tmp_path / "lane.db"), host="127.0.0.1", **settings))
    assert isinstance(app, App)

    async def stack(scope: Scope, receive: Receive, send: Send) -> None:
        await Starlette.__call__(app, scope, receive, send)

    async with app.router.lifespan_context(app):
        base = "http://127.0.0.1:8787"
        lane = httpx.AsyncClient(transport=httpx.ASGITransport(app), base_url=base)
        plain = httpx.AsyncClient(transport=httpx.ASGITransport(stack), base_url=base)
        async with lane, plain:
            answer = await lane.post("/v1/auth/register", json={"email": "a@example.com"})
            for c in (lane, plain):
                c.headers["Authorization"] = f"Bearer {answer.json()['api_key']}"
            yield app, lane, plain


def _run(tmp_path: Path, test: Callable[[Clients], Awaitable[None]], **settings: Any) -> None:
    async def main() -> None:
        async with _clients(tmp_path, **settings) as clients:
            await test(clients)

    asyncio.run(main())


def _scope(method: str, path: str) -> Scope:
    return {"type": "http", "method": method, "path": path, "root_path": "", "headers": []}


def _starlette_route(app: Starlette, scope: Scope) -> Route | None:
    """The route Starlette's router hands this request to (the first full match)."""
    for route in app.routes:
        if isinstance(route, Route) and route.matches(scope)[0] is Match.FULL:
            return route
    return None


def _same(a: httpx.Response, b: httpx.Response) -> None:
    assert (a.status_code, a.content) == (b.status_code, b.content)
    assert a.headers.multi_items() == b.headers.multi_items()


# -- routing -------------------------------------------------------------------------------


def test_the_lane_takes_the_hot_routes_as_starlette_routes_them(tmp_path: Path) -> None:
    app = create_app(ServerSettings(db=str(tmp_path / "lane.db")))
    assert isinstance(app, App) and app.lane is not None
    taken = set()
    paths = [
        r.path.replace("{cue_id}", "cue_1").replace("{execution_id}", "exe_1")
        for r in app.routes
        if isinstance(r, Route)
    ]
    odd = ["/v1/cues/cue_1/", "/v1/cues//fire", "/v1/executions/claim", "/v1/nothing", "/"]
    for path in paths + odd:
        for method in ("GET", "HEAD", "POST", "PATCH", "DELETE", "PUT"):
            scope = _scope(method, path)
            hit = app.lane.match(scope)
            if hit is None:
                continue
            hot, params = hit
            assert hot.route is _starlette_route(app, scope), (method, path)
            taken.add((method, hot.route.path))
            assert params == hot.route.matches(scope)[1]["path_params"]
    assert taken == HOT
    # Starlette's order decides: a literal route listed first wins over a template.
    assert app.lane.match(_scope("GET", "/v1/executions/claimable")) is None
    claim = app.lane.match(_scope("GET", "/v1/executions/claim"))
    assert claim is not None and claim[0].route.path == "/v1/executions/{execution_id}"
    assert app.lane.match(_scope("HEAD", "/v1/cues/cue_1")) is None  # Starlette's, as HEAD
    mounted = {**_scope("GET", "/v1/cues/cue_1"), "root_path": "/api"}
    assert app.lane.match(mounted) is None


def test_without_an_extension_its_hot_route_is_not_served(tmp_path: Path) -> None:
    app = create_app(ServerSettings(db=str(tmp_path / "lane.db"), extensions=False))
    assert isinstance(app, App) and app.lane is not None
    assert app.lane.match(_scope("POST", "/v1/fire")) is None
    assert app.lane.match(_scope("POST", "/v1/cues/cue_1/fire")) is not None


# -- answers -------------------------------------------------------------------------------


def test_error_answers_are_starlettes(tmp_path: Path) -> None:
    async def test(clients: Clients) -> None:
        _, lane, plain = clients
        cue = (await lane.post("/v1/cues", json={"name": "c", "transport": "worker"})).json()
        big = b'{"payload_override": "' + b"x" * 2000 + b'"}'
        requests: list[tuple[str, str, dict[str, Any]]] = [
            ("GET", "/v1/cues/cue_nothere0000", {}),
            ("GET", "/v1/executions/exe_nothere", {}),
            ("POST", "/v1/cues/cue_nothere0000/fire", {"json": {}}),
            ("POST", "/v1/executions/exe_nothere/heartbeat", {}),
            ("POST", "/v1/executions/exe_nothere/outcome", {"json": {"success": True}}),
            ("POST", "/v1/executions/claim", {"content": b"{not json"}),
            ("POST", f"/v1/cues/{cue['id']}/fire", {"content": big}),  # 413
            ("GET", f"/v1/cues/{cue['id']}", {"headers": {"Authorization": ""}}),
            ("GET", f"/v1/cues/{cue['id']}", {"headers": {"Authorization": "Bearer nope"}}),
            ("GET", f"/v1/cues/{cue['id']}", {"headers": {"Host": "evil.example"}}),
            ("POST", "/v1/executions/claim", {"headers": {"Host": "evil.example:80"}}),
            ("PUT", f"/v1/cues/{cue['id']}/fire", {}),  # 405: Starlette's, both ways
            ("GET", f"/v1/cues/{cue['id']}", {}),
        ]
        statuses = []
        for method, path, kw in requests:
            a = await lane.request(method, path, **kw)
            b = await plain.request(method, path, **kw)
            _same(a, b)
            statuses.append(a.status_code)
        assert statuses == [404, 404, 404, 404, 404, 422, 413, 401, 401, 421, 421, 405, 200]
        put = await lane.put(f"/v1/cues/{cue['id']}/fire")
        assert put.headers["Allow"] == "POST"
        refused = await lane.get(f"/v1/cues/{cue['id']}", headers={"Host": "evil.example"})
        error_of(refused, 421, "misdirected_request")

    _run(tmp_path, test, max_body_bytes=1024)


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (StorageError("connection lost"), 503, "storage_unavailable"),
        (RuntimeError("a bug"), 500, "internal_error"),
    ],
)
def test_an_unanswered_exception_gets_the_guards_answer(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    fault: Exception,
    status: int,
    code: str,
) -> None:
    async def test(clients: Clients) -> None:
        app, lane, plain = clients
        cue = (await lane.post("/v1/cues", json={"name": "c", "transport": "worker"})).json()

        async def broken(*args: object, **kwargs: object) -> None:
            raise fault  # SQLite cannot go away, and a bug cannot be made on purpose

        monkeypatch.setattr(app.state.server.storage, "get_cue", broken)
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="cuemsg.server"):
            a = await lane.get(f"/v1/cues/{cue['id']}")
            assert len(caplog.records) == 1  # logged once, as the guard does
            b = await plain.get(f"/v1/cues/{cue['id']}")
        _same(a, b)
        error_of(a, status, code)
        assert f"GET /v1/cues/{cue['id']}" in caplog.records[0].getMessage()

    _run(tmp_path, test)


def test_metrics_count_the_lanes_answers_by_route_template(tmp_path: Path) -> None:
    async def test(clients: Clients) -> None:
        _, lane, _ = clients
        cue = (await lane.post("/v1/cues", json={"name": "c", "transport": "worker"})).json()
        for _ in range(2):
            assert (await lane.post(f"/v1/cues/{cue['id']}/fire", json={})).status_code == 200
        assert (await lane.get("/v1/cues/cue_nothere0000")).status_code == 404
        text = (await lane.get("/metrics")).text
        assert (
            'cuemsg_http_requests_total{method="POST",route="/v1/cues/{cue_id}/fire",'
            'status="200"} 2.0' in text
        )
        assert (
            'cuemsg_http_requests_total{method="GET",route="/v1/cues/{cue_id}",status="404"} 1.0'
            in text
        )
        assert "cuemsg_fires_total 2.0" in text
        assert 'cuemsg_storage_seconds_count{op="fire"} 2.0' in text

    _run(tmp_path, test)


def test_writes_on_the_lane_bump_the_feed_and_reads_do_not(tmp_path: Path) -> None:
    async def test(clients: Clients) -> None:
        app, lane, _ = clients
        cue = (await lane.post("/v1/cues", json={"name": "c", "transport": "worker"})).json()
        event = app.state.server.feed.subscribe()
        event.clear()
        assert (await lane.get(f"/v1/cues/{cue['id']}")).status_code == 200
        assert (await lane.get("/v1/executions/exe_nothere")).status_code == 404
        assert not event.is_set()
        # A heartbeat that changes nothing (unknown execution) bumps too, as Starlette's did.
        assert (await lane.post("/v1/executions/exe_nothere/heartbeat")).status_code == 404
        assert event.is_set()

    _run(tmp_path, test)


# -- over real HTTP: the connection is kept ------------------------------------------------


def test_errors_on_the_lane_keep_the_connection(tmp_path: Path) -> None:
    path = tmp_path / "lane.db"
    with (
        run_server(ServerSettings(db=str(path))) as srv,
        httpx.Client(
            base_url=srv.base_url,
            headers={"Authorization": f"Bearer {srv.new_key()}"},
            limits=httpx.Limits(max_connections=1),
        ) as http,
    ):
        cue = http.post("/v1/cues", json={"name": "c", "transport": "worker"}).json()
        fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
        # 507: the server's connection may not grow the file (a real SQLITE_FULL).
        db: sqlite3.Connection = srv._server.app_server.storage.db  # type: ignore[attr-defined]
        pages = db.execute("PRAGMA page_count").fetchone()[0]
        db.execute(f"PRAGMA max_page_count = {pages}")
        big = {"payload_override": {"blob": "x" * 40_000}}
        full = http.post(f"/v1/cues/{cue['id']}/fire", json=big)
        db.execute("PRAGMA max_page_count = 1073741823")
        # 500: the executions table is gone (a real fault the storage does not map).
        with closing(sqlite3.connect(path, timeout=10)) as other, other:
            other.execute("DROP TABLE executions")
        broken = http.get(f"/v1/executions/{fired['id']}")
        after = http.get(f"/v1/cues/{cue['id']}")
        ends = {_local_address(a) for a in (full, broken, after)}
    error_of(full, 507, "storage_full")
    assert full.headers["Retry-After"] == "30"
    error_of(broken, 500, "internal_error")
    assert after.status_code == 200, after.text
    assert len(ends) == 1, ends  # one connection carried all three
