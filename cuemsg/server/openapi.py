"""The OpenAPI 3.1 document, generated from `ROUTES` and the msgspec body
types, so it always matches what is served; and `GET /openapi.json`."""

from __future__ import annotations

from typing import Any

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from cuemsg.server import wire
from cuemsg.server.responses import ok
from cuemsg.server.routes import ROUTES
from cuemsg.server.state import Server


async def openapi(request: Request, server: Server) -> Response:
    return ok(openapi_document(server.extensions, metrics=server.settings.metrics))


def openapi_document(extensions: frozenset[str], *, metrics: bool = False) -> dict[str, Any]:
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
    if metrics:
        ok_text = {"200": {"description": "Prometheus text format"}}
        paths["/metrics"] = {"get": {"summary": "Prometheus metrics", "responses": ok_text}}
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
