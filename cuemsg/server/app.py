"""The embedded CueAPI server: an ASGI app over a `Storage` backend.

`create_app(settings)` returns a Starlette app whose routes are the lists
`cuemsg.server.routes.ROUTES` and `OPEN_ROUTES` (info, register, health, the
OpenAPI document) and the web console's files (`cuemsg.console`); this module
owns only the assembly: opening the backend, the lifespan (storage, sweeper,
retention purge, scheduler and webhook dispatcher), the Host guard of a
loopback-bound server, and the 404/405 answers (other errors: `guard.py`).
The message path's routes are answered by the hot lane in front (`lane.py`).
Handlers live in `cuemsg.server.handlers`, shared state in `state.py`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import cast

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from cuemsg._exceptions import StorageOpenError
from cuemsg.console import console_routes
from cuemsg.server.errors import ApiProblem
from cuemsg.server.guard import ErrorGuard
from cuemsg.server.hosts import HostCheck, HostGuard
from cuemsg.server.keys import ensure_dev_key
from cuemsg.server.lane import App, Lane
from cuemsg.server.responses import problem
from cuemsg.server.retention import purge_forever
from cuemsg.server.routes import OPEN_ROUTES, ROUTES, authed, public
from cuemsg.server.schedules import Scheduler
from cuemsg.server.settings import ServerSettings
from cuemsg.server.state import Server
from cuemsg.server.storage.base import Storage
from cuemsg.server.sweeper import sweep_forever
from cuemsg.server.webhooks import Dispatcher

# `Server` and `ensure_dev_key` are imported from here by the CLI and the runner.
__all__ = ["Server", "create_app", "ensure_dev_key", "open_storage"]


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        # Each method of a path is its own Route, so Starlette's own `Allow` names
        # only the route it tried first; name every method of that route's path.
        routes = [r for r in request.app.routes if isinstance(r, Route)]
        path = next(r.path for r in routes if r.matches(request.scope)[0] != Match.NONE)
        allowed = sorted({m for r in routes if r.path == path for m in r.methods or ()})
        return problem(
            ApiProblem(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}",
                headers={"Allow": ", ".join(allowed)},
            )
        )
    return problem(ApiProblem(404, "not_found", f"no route {request.url.path}"))


def open_storage(settings: ServerSettings) -> Storage:
    """The backend that `settings.db` names, not yet open.

    Raises:
        StorageOpenError: a SQLite file that cannot work (checked now, so that a
            caller such as `cuemsg serve` can report it before the app starts).
    """
    db = settings.db
    if db.startswith(("postgresql://", "postgres://")):
        try:
            from cuemsg.server.storage.postgres import PostgresStorage
        except ImportError as exc:  # psycopg is an optional extra
            raise ImportError(
                "the PostgreSQL backend needs psycopg: pip install 'cuemsg[postgres]'"
            ) from exc
        return PostgresStorage(db)
    from cuemsg.server.storage.sqlite import SQLiteStorage
    from cuemsg.server.storage.sqlite_files import check_file

    path = db.removeprefix("sqlite:///").removeprefix("sqlite://") or ":memory:"
    check_file(path)
    return SQLiteStorage(path, synchronous=settings.sqlite_synchronous)


def create_app(
    settings: ServerSettings | None = None,
    storage: Storage | None = None,
    *,
    clock: Callable[[], float] = time.time,
) -> Starlette:
    """Build the ASGI app. Storage is opened on startup and closed on shutdown.

    `clock` gives the time in UNIX seconds (default `time.time`); a test passes
    a fake one to move past leases and timeouts without waiting.
    """
    settings = settings or ServerSettings()
    storage = storage or open_storage(settings)
    metrics = None
    if settings.metrics:
        from cuemsg.server.metrics import MeteredStorage, Metrics

        metrics = Metrics()
        storage = cast(Storage, MeteredStorage(storage, metrics))
    server = Server(settings, storage, clock)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await server.storage.open()
        except StorageOpenError as exc:
            server.startup_error = exc
            raise
        interval = server.settings.sweep_interval
        scheduler = Scheduler(server.storage, now=server.clock)
        dispatcher = Dispatcher(server.storage, server.settings, now=server.clock)
        tasks = [
            asyncio.create_task(sweep_forever(server)),
            asyncio.create_task(scheduler.run_forever(interval)),
            asyncio.create_task(dispatcher.run_forever(interval)),
        ]
        if settings.retention or settings.dead_letter_retention:
            tasks.append(asyncio.create_task(purge_forever(server)))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await dispatcher.aclose()  # deliveries cut short are made again (leases)
            await server.storage.close()

    def route(path: str, method: str, endpoint: Callable[[Request], Awaitable[Response]]) -> Route:
        if metrics is not None:  # count answers by route template, method and status
            endpoint = metrics.instrument(path, method, endpoint)
        return Route(path, endpoint, methods=[method])

    routes = [
        route(e.path, e.method, (authed if e.auth else public)(server, e.handler))
        for e in ROUTES + OPEN_ROUTES
        if e.extension is None or e.extension in server.extensions
    ]
    if metrics is not None:
        routes.append(route("/metrics", "GET", public(server, metrics.scrape)))
    middleware = []
    hosts = None
    if settings.host is not None and settings.loopback:
        hosts = HostCheck(settings.host)
        middleware.append(Middleware(HostGuard, check=hosts))
    app = App(
        routes=[*routes, *console_routes()],  # the console: static files calling the API
        lifespan=lifespan,
        # Other exceptions: answered by the guard, which keeps the connection.
        middleware=[Middleware(ErrorGuard), *middleware],
        exception_handlers={HTTPException: _not_found},
    )
    app.lane = Lane(app.routes, hosts)  # the message path, past Starlette's layers
    app.state.server = server
    return app
