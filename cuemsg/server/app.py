"""The embedded CueAPI server: an ASGI app over a `Storage` backend.

`create_app(settings)` returns a Starlette app whose routes are the one list
`ROUTES` below; `/openapi.json` is generated from that same list, so the
document always matches what is served. Bodies are decoded and validated by
msgspec (`wire.py`) and answers encoded by msgspec.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import secrets
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cuemsg.server import wire
from cuemsg.server.errors import ApiProblem, cue_not_found, execution_not_found, invalid
from cuemsg.server.settings import MAX_CLAIM_WAIT, ServerSettings
from cuemsg.server.storage.base import (
    CLAIMABLE_LIST_LIMIT,
    EXECUTION_STATES,
    CueRow,
    ExecutionRow,
    NewFire,
    OutcomeRecord,
    Storage,
)

log = logging.getLogger("cuemsg.server")

_json = msgspec.json.Encoder()
_canonical = msgspec.json.Encoder(order="sorted")
_CUE_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def _ok(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status, media_type="application/json")


def _problem(p: ApiProblem) -> Response:
    return Response(_json.encode(p.body()), p.status, p.headers, media_type="application/json")


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "cue_sk_" + secrets.token_hex(16)


def new_cue_id() -> str:
    return "cue_" + "".join(secrets.choice(_CUE_ID_ALPHABET) for _ in range(12))


def new_tenant_id() -> str:
    return "ten_" + secrets.token_hex(8)


class Stats(msgspec.Struct):
    """Counters the benchmark reads from `/health`."""

    requests: int = 0
    claim_attempts: int = 0  # claim-next statements run, woken long-polls included
    started_at: float = 0.0


@dataclass
class Ctx:
    """What a handler gets: the request, its tenant and the server."""

    request: Request
    tenant_id: str
    server: Server

    async def body(self) -> bytes:
        return await self.server.read_body(self.request)

    def param(self, name: str) -> str:
        return str(self.request.path_params[name])


Handler = Callable[[Ctx], Awaitable[Response]]


class Server:
    """State shared by the routes: settings, storage, key cache, counters."""

    def __init__(self, settings: ServerSettings, storage: Storage) -> None:
        self.settings = settings
        self.storage = storage
        self.stats = Stats(started_at=time.time())
        self._tenants: dict[str, str] = {}  # API key -> tenant id (positive hits only)
        self._windows: dict[str, deque[float]] = {}
        self.extensions = frozenset(settings.extension_names)
        self.draining = False

    def drain(self) -> None:
        """Shutdown begins: parked claims answer now instead of waiting on."""
        self.draining = True
        self.storage.notifier.wake_all()

    async def read_body(self, request: Request) -> bytes:
        limit = self.settings.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit)
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
        return b"".join(chunks)

    async def authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise ApiProblem(
                401, "invalid_api_key", "missing API key: send 'Authorization: Bearer <key>'"
            )
        tenant = self._tenants.get(key)
        if tenant is None:
            tenant = await self.storage.tenant_for_key(hash_key(key))
            if tenant is None:
                raise ApiProblem(401, "invalid_api_key", "the API key is not valid")
            self._tenants[key] = tenant
        if self.settings.rate_limit:
            self._rate_limit(key)
        return tenant

    def _rate_limit(self, key: str) -> None:
        now = time.monotonic()
        window = self._windows.setdefault(key, deque())
        while window and window[0] <= now - 60.0:
            window.popleft()
        if len(window) >= self.settings.rate_limit:
            retry_after = max(1, int(window[0] + 60.0 - now) + 1)
            raise ApiProblem(
                429,
                "rate_limited",
                f"more than {self.settings.rate_limit} requests a minute for this key",
                headers={"Retry-After": str(retry_after)},
            )
        window.append(now)

    def need(self, extension: str, field: str, value: object) -> None:
        """Reject an extension field when the extension is off (plain CueAPI mode)."""
        if value is not None and extension not in self.extensions:
            raise invalid(field, f"unknown field (extension {extension} is off)")


def _too_large(limit: int) -> ApiProblem:
    return ApiProblem(413, "payload_too_large", f"request body is over the limit of {limit} bytes")


# -- handlers ----------------------------------------------------------------


async def register(request: Request, server: Server) -> Response:
    body = wire.decode(await server.read_body(request), wire.Register)
    key = new_api_key()
    await server.storage.create_tenant(new_tenant_id(), body.email, hash_key(key), time.time())
    return _ok({"api_key": key, "email": body.email}, 201)


def _check_schedule(schedule: dict[str, Any] | None) -> None:
    if schedule is None:
        return
    kind = schedule.get("type")
    if kind == "once":
        at = schedule.get("at")
        if not isinstance(at, str):
            raise invalid("schedule.at", "a 'once' schedule needs 'at', an ISO 8601 timestamp")
        wire.parse_time(at, "schedule.at")
    elif kind == "recurring":
        cron = schedule.get("cron")
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise invalid("schedule.cron", "a 'recurring' schedule needs a 5-field 'cron'")
    else:
        raise invalid("schedule.type", "must be 'once' or 'recurring'")


def _retry_dict(retry: wire.Retry | None) -> dict[str, Any]:
    return msgspec.to_builtins(retry or wire.Retry())  # type: ignore[no-any-return]


async def create_cue(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.CueCreate)
    _check_schedule(body.schedule)
    if body.transport == "webhook":
        url = (body.callback or {}).get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise invalid("callback.url", "a webhook cue needs callback.url (http or https)")
    now = time.time()
    cue = CueRow(
        id=new_cue_id(),
        tenant_id=ctx.tenant_id,
        name=body.name,
        description=body.description,
        transport=body.transport,
        schedule=body.schedule,
        callback=body.callback,
        payload=body.payload,
        retry=_retry_dict(body.retry),
        created_at=now,
        updated_at=now,
    )
    if body.schedule and body.schedule["type"] == "once":
        cue.next_run = wire.parse_time(body.schedule["at"], "schedule.at")
    cue = await ctx.server.storage.create_cue(cue)
    return _ok(wire.cue_json(cue), 201)


def _page(request: Request, default: int = 50, most: int = 1000) -> tuple[int, int]:
    def number(name: str, value: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return value
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise invalid(name, f"must be an integer from {low} to {high}, not {raw!r}")
        return int(raw)

    return number("limit", default, 1, most), number("offset", 0, 0, 10**9)


async def list_cues(ctx: Ctx) -> Response:
    limit, offset = _page(ctx.request)
    status = ctx.request.query_params.get("status")
    cues, total = await ctx.server.storage.list_cues(
        ctx.tenant_id, status=status, limit=limit, offset=offset
    )
    return _ok(
        {"cues": [wire.cue_json(c) for c in cues], "total": total, "limit": limit, "offset": offset}
    )


async def get_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    cue = await ctx.server.storage.get_cue(ctx.tenant_id, cue_id)
    if cue is None:
        raise cue_not_found(cue_id)
    return _ok(wire.cue_json(cue))


async def patch_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    body = wire.decode(await ctx.body(), wire.CuePatch)
    changes = {
        f: getattr(body, f)
        for f in ("name", "description", "status", "schedule", "payload")
        if getattr(body, f) is not None
    }
    if "schedule" in changes:
        _check_schedule(changes["schedule"])
    if body.retry is not None:
        changes["retry"] = _retry_dict(body.retry)
    cue = await ctx.server.storage.update_cue(ctx.tenant_id, cue_id, changes, time.time())
    if cue is None:
        raise cue_not_found(cue_id)
    return _ok(wire.cue_json(cue))


async def delete_cue(ctx: Ctx) -> Response:
    cue_id = ctx.param("cue_id")
    if not await ctx.server.storage.delete_cue(ctx.tenant_id, cue_id):
        raise cue_not_found(cue_id)
    return Response(status_code=204)


def _new_fire(cue_id: str, body: wire.FireBody, now: float, field: str) -> NewFire:
    when = now if body.send_at is None else wire.parse_time(body.send_at, f"{field}send_at")
    body_hash = None
    if body.idempotency_key is not None:
        # "The same body" is the fire body, key aside, as canonical JSON.
        parts = msgspec.to_builtins(body)
        parts.pop("idempotency_key", None)
        parts.pop("cue_id", None)
        body_hash = hashlib.sha256(_canonical.encode(parts)).hexdigest()
    return NewFire(
        cue_id=cue_id,
        payload_override=body.payload_override,
        merge_strategy=body.merge_strategy,
        scheduled_for=max(when, now),
        idempotency_key=body.idempotency_key,
        body_hash=body_hash,
    )


async def fire(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.FireBody)
    now = time.time()
    new = _new_fire(ctx.param("cue_id"), body, now, "")
    [execution] = await ctx.server.storage.fire(ctx.tenant_id, [new], now)
    return _ok(wire.fire_json(execution))


async def fire_batch(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.BatchFire)
    now = time.time()
    fires = [_new_fire(f.cue_id, f, now, f"fires[{i}].") for i, f in enumerate(body.fires)]
    executions = await ctx.server.storage.fire(ctx.tenant_id, fires, now)
    return _ok({"executions": [wire.fire_json(e) for e in executions]})


async def list_executions(ctx: Ctx) -> Response:
    limit, offset = _page(ctx.request)
    query = ctx.request.query_params
    status = query.get("status")
    if status is not None and status not in EXECUTION_STATES:
        raise invalid("status", f"must be one of {', '.join(EXECUTION_STATES)}")
    executions, total = await ctx.server.storage.list_executions(
        ctx.tenant_id, cue_id=query.get("cue_id"), status=status, limit=limit, offset=offset
    )
    return _ok(
        {
            "executions": [wire.execution_json(e) for e in executions],
            "total": total,
            "limit": limit,
            "offset": offset,
        }
    )


async def get_execution(ctx: Ctx) -> Response:
    execution_id = ctx.param("execution_id")
    execution = await ctx.server.storage.get_execution(ctx.tenant_id, execution_id)
    if execution is None:
        raise execution_not_found(execution_id)
    return _ok(wire.execution_json(execution))


async def list_claimable(ctx: Ctx) -> Response:
    query = ctx.request.query_params
    executions = await ctx.server.storage.list_claimable(
        ctx.tenant_id,
        task=query.get("task"),
        agent=query.get("agent"),
        now=time.time(),
        limit=CLAIMABLE_LIST_LIMIT,
    )
    return _ok({"executions": [wire.claimable_json(e) for e in executions]})


async def claim(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.ClaimBody)
    server = ctx.server
    lease = server.settings.lease_seconds
    execution = await server.storage.claim(
        ctx.tenant_id, ctx.param("execution_id"), body.worker_id, time.time(), lease
    )
    return _ok(wire.claim_json(execution, lease, "claim.payload" in server.extensions))


async def claim_next(ctx: Ctx) -> Response:
    server = ctx.server
    raw = await ctx.body()
    if server.extensions:
        body = wire.decode(raw, wire.ClaimNextExtBody)
    else:
        plain = wire.decode(raw, wire.ClaimNextBody)
        body = wire.ClaimNextExtBody(worker_id=plain.worker_id)
    server.need("claim.task", "task", body.task)
    server.need("claim.task", "agent", body.agent)
    server.need("claim.wait", "wait", body.wait)
    server.need("claim.many", "limit", body.limit)
    lease = server.settings.lease_seconds
    storage = server.storage
    wait = min(body.wait or 0.0, MAX_CLAIM_WAIT)
    deadline = time.monotonic() + wait
    while True:
        # Subscribe before trying, so a fire between the try and the wait still wakes us.
        waiter = storage.notifier.subscribe(ctx.tenant_id, body.task, body.agent) if wait else None
        woke = False
        try:
            server.stats.claim_attempts += 1
            claimed = await storage.claim_next(
                ctx.tenant_id,
                body.worker_id,
                task=body.task,
                agent=body.agent,
                now=time.time(),
                lease_seconds=lease,
                limit=body.limit or 1,
            )
            if claimed:
                break
            remaining = deadline - time.monotonic()
            woke = (
                waiter is not None
                and remaining > 0
                and not server.draining
                and await waiter.wait(remaining)
                # A client that hung up must not be handed a message it will never see.
                and not await ctx.request.is_disconnected()
            )
            if not woke:
                what = f" for task {body.task!r}" if body.task is not None else ""
                raise ApiProblem(409, "claim_failed", f"no claimable execution{what}")
        finally:
            if waiter is not None:
                if not woke:
                    # A wake that arrived after our try is not ours to keep: hand it on.
                    waiter.pass_on()
                waiter.close()
    with_payload = "claim.payload" in server.extensions
    if body.limit is None:
        return _ok(wire.claim_json(claimed[0], lease, with_payload))
    return _ok(
        {"claimed": True, "executions": [wire.claim_json(e, lease, with_payload) for e in claimed]}
    )


async def heartbeat(ctx: Ctx) -> Response:
    lease = ctx.server.settings.lease_seconds
    execution = await ctx.server.storage.heartbeat(
        ctx.tenant_id,
        ctx.param("execution_id"),
        ctx.request.headers.get("x-worker-id"),
        time.time(),
        lease,
    )
    return _ok(
        {
            "execution_id": execution.id,
            "lease_extended_until": wire.iso(execution.lease_expires_at),
            "acknowledged": True,
        }
    )


def _outcome(body: wire.OutcomeBody, worker: str | None) -> OutcomeRecord:
    return OutcomeRecord(
        success=body.success,
        result=body.result,
        error=body.error,
        metadata=body.metadata,
        recorded_at=time.time(),
        worker_id=worker,
    )


def _recorded(execution: ExecutionRow) -> dict[str, Any]:
    return {
        "execution_id": execution.id,
        "outcome_recorded": True,
        "outcome_state": execution.status,
    }


async def outcome(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.OutcomeBody)
    worker = ctx.request.headers.get("x-worker-id")
    execution = await ctx.server.storage.record_outcome(
        ctx.tenant_id, ctx.param("execution_id"), worker, _outcome(body, worker)
    )
    return _ok(_recorded(execution))


async def outcome_batch(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.BatchOutcome)
    worker = ctx.request.headers.get("x-worker-id")
    items = [(item.execution_id, _outcome(item, worker)) for item in body.outcomes]
    results = await ctx.server.storage.record_outcomes(ctx.tenant_id, items, worker)
    return _ok(
        {
            "results": [
                {"execution_id": execution_id, **r.body()}
                if isinstance(r, ApiProblem)
                else _recorded(r)
                for (execution_id, _), r in zip(items, results, strict=True)
            ]
        }
    )


async def worker_heartbeat(ctx: Ctx) -> Response:
    body = wire.decode(await ctx.body(), wire.WorkerHeartbeat)
    now = time.time()
    await ctx.server.storage.worker_heartbeat(ctx.tenant_id, body.worker_id, body.handlers, now)
    return _ok({"acknowledged": True, "server_time": wire.iso(now)})


async def list_workers(ctx: Ctx) -> Response:
    workers = await ctx.server.storage.list_workers(ctx.tenant_id)
    return _ok(
        {
            "workers": [
                {
                    "worker_id": w.worker_id,
                    "handlers": w.handlers,
                    "last_heartbeat": wire.iso(w.last_heartbeat),
                }
                for w in workers
            ]
        }
    )


# -- routing -----------------------------------------------------------------


@dataclass(frozen=True)
class Endpoint:
    """One route; the OpenAPI document is generated from the list of these."""

    path: str
    method: str
    handler: Handler
    summary: str
    body: type[Any] | None = None
    extension: str | None = None  # served only when this extension is on


ROUTES: list[Endpoint] = [
    Endpoint("/v1/cues", "POST", create_cue, "Create a cue", wire.CueCreate),
    Endpoint("/v1/cues", "GET", list_cues, "List cues"),
    Endpoint("/v1/cues/{cue_id}", "GET", get_cue, "Get a cue"),
    Endpoint("/v1/cues/{cue_id}", "PATCH", patch_cue, "Update, pause or resume", wire.CuePatch),
    Endpoint("/v1/cues/{cue_id}", "DELETE", delete_cue, "Delete a cue"),
    Endpoint("/v1/cues/{cue_id}/fire", "POST", fire, "Fire a cue", wire.FireBody),
    Endpoint("/v1/fire", "POST", fire_batch, "Fire many cues", wire.BatchFire, "fire.batch"),
    Endpoint("/v1/executions", "GET", list_executions, "List executions"),
    Endpoint("/v1/executions/claimable", "GET", list_claimable, "List claimable executions"),
    Endpoint("/v1/executions/claim", "POST", claim_next, "Claim the next", wire.ClaimNextExtBody),
    Endpoint(
        "/v1/executions/outcomes",
        "POST",
        outcome_batch,
        "Record many outcomes",
        wire.BatchOutcome,
        "outcome.batch",
    ),
    Endpoint("/v1/executions/{execution_id}", "GET", get_execution, "Get an execution"),
    Endpoint("/v1/executions/{execution_id}/claim", "POST", claim, "Claim one", wire.ClaimBody),
    Endpoint("/v1/executions/{execution_id}/heartbeat", "POST", heartbeat, "Extend the lease"),
    Endpoint(
        "/v1/executions/{execution_id}/outcome",
        "POST",
        outcome,
        "Record the outcome",
        wire.OutcomeBody,
    ),
    Endpoint(
        "/v1/worker/heartbeat", "POST", worker_heartbeat, "Register a worker", wire.WorkerHeartbeat
    ),
    Endpoint("/v1/workers", "GET", list_workers, "List workers", None, "workers.list"),
]


def _authed(server: Server, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        server.stats.requests += 1
        try:
            tenant = await server.authenticate(request)
            return await handler(Ctx(request, tenant, server))
        except ApiProblem as p:
            return _problem(p)

    return endpoint


def _open(
    server: Server, handler: Callable[[Request, Server], Awaitable[Response]]
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        server.stats.requests += 1
        try:
            return await handler(request, server)
        except ApiProblem as p:
            return _problem(p)

    return endpoint


async def info(request: Request, server: Server) -> Response:
    from cuemsg import __version__

    body: dict[str, Any] = {"version": __version__, "server": "cuemsg"}
    if server.extensions:
        body["extensions"] = sorted(server.extensions)
    return _ok(body)


async def health(request: Request, server: Server) -> Response:
    return _ok(
        {
            "status": "ok",
            "requests": server.stats.requests,
            "claim_attempts": server.stats.claim_attempts,
            "waiting_claims": server.storage.notifier.waiting(),
        }
    )


async def openapi(request: Request, server: Server) -> Response:
    return _ok(openapi_document(server.extensions))


def openapi_document(extensions: frozenset[str]) -> dict[str, Any]:
    """The OpenAPI 3.1 document of the routes served with these extensions."""
    from cuemsg import __version__

    served = [e for e in ROUTES if e.extension is None or e.extension in extensions]
    bodies = sorted({e.body for e in served if e.body is not None}, key=lambda t: t.__name__)
    _, components = msgspec.json.schema_components(
        bodies, ref_template="#/components/schemas/{name}"
    )
    error = {"description": "CueAPI error body", "content": {"application/json": {}}}
    paths: dict[str, dict[str, Any]] = {}
    for e in served:
        op: dict[str, Any] = {
            "summary": e.summary,
            "operationId": e.handler.__name__,
            "security": [{"bearer": []}],
            "responses": {"200": {"description": "OK"}, "default": error},
        }
        if e.body is not None:
            op["requestBody"] = {
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{e.body.__name__}"}
                    }
                }
            }
        params = [p.strip("{}") for p in e.path.split("/") if p.startswith("{")]
        if params:
            op["parameters"] = [
                {"name": p, "in": "path", "required": True, "schema": {"type": "string"}}
                for p in params
            ]
        paths.setdefault(e.path, {})[e.method.lower()] = op
    for path, summary in (
        ("/v1/info", "Server version and extensions"),
        ("/v1/auth/register", "Create a tenant and its API key"),
        ("/health", "Liveness and counters"),
        ("/openapi.json", "This document"),
    ):
        method = "post" if path == "/v1/auth/register" else "get"
        paths[path] = {method: {"summary": summary, "responses": {"200": {"description": "OK"}}}}
    paths["/v1/auth/register"]["post"]["requestBody"] = {
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Register"}}}
    }
    _, reg = msgspec.json.schema_components(
        [wire.Register], ref_template="#/components/schemas/{name}"
    )
    return {
        "openapi": "3.1.0",
        "info": {"title": "cuemsg embedded CueAPI server", "version": __version__},
        "paths": paths,
        "components": {
            "schemas": {**components, **reg},
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


async def _not_found(request: Request, exc: Exception) -> Response:
    if isinstance(exc, HTTPException) and exc.status_code == 405:
        return _problem(
            ApiProblem(
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {request.url.path}",
            )
        )
    return _problem(ApiProblem(404, "not_found", f"no route {request.url.path}"))


async def _crash(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _problem(ApiProblem(500, "internal_error", f"internal error: {type(exc).__name__}"))


def open_storage(settings: ServerSettings) -> Storage:
    """The backend that `settings.db` names."""
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

    path = db.removeprefix("sqlite:///").removeprefix("sqlite://")
    return SQLiteStorage(path or ":memory:", synchronous=settings.sqlite_synchronous)


async def _sweep_forever(server: Server) -> None:
    since = time.time()
    interval = server.settings.sweep_interval
    failures = 0
    while True:
        await asyncio.sleep(interval)
        now = time.time()
        try:
            await server.storage.sweep(
                now, since=since, unclaimed_timeout=server.settings.unclaimed_timeout
            )
            since = now
            failures = 0
        except Exception:  # keep sweeping: a failed pass is retried next interval
            # The first failure with its traceback, then a line a minute, not one per pass.
            if failures == 0:
                log.exception("sweep failed; retrying every %.1fs", interval)
            elif failures % max(1, int(60 / interval)) == 0:
                log.warning("sweep still failing (%d passes)", failures + 1)
            failures += 1


def create_app(settings: ServerSettings | None = None, storage: Storage | None = None) -> Starlette:
    """Build the ASGI app. Storage is opened on startup and closed on shutdown."""
    settings = settings or ServerSettings()
    server = Server(settings, storage or open_storage(settings))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await server.storage.open()
        sweeper = asyncio.create_task(_sweep_forever(server))
        try:
            yield
        finally:
            sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sweeper
            await server.storage.close()

    routes = [
        Route(e.path, _authed(server, e.handler), methods=[e.method])
        for e in ROUTES
        if e.extension is None or e.extension in server.extensions
    ]
    routes += [
        Route("/v1/info", _open(server, info), methods=["GET"]),
        Route("/v1/auth/register", _open(server, register), methods=["POST"]),
        Route("/health", _open(server, health), methods=["GET"]),
        Route("/openapi.json", _open(server, openapi), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: _not_found, Exception: _crash},
    )
    app.state.server = server
    return app


async def ensure_dev_key(storage: Storage) -> str:
    """The development key of this database, made on first start (kept in plain
    text in the database's meta table: for local development only)."""
    key = await storage.get_meta("dev_api_key")
    if key is None:
        key = new_api_key()
        await storage.create_tenant(new_tenant_id(), "dev@localhost", hash_key(key), time.time())
        await storage.set_meta("dev_api_key", key)
    return key
