"""The OpenAPI document matches what is served, route for route."""

from __future__ import annotations

import httpx
from starlette.routing import Route

from cuemsg.server.app import create_app
from cuemsg.server.settings import ServerSettings
from cuemsg.testing import RunningServer


def _served(extensions: bool) -> set[tuple[str, str]]:
    app = create_app(ServerSettings(db=":memory:", extensions=extensions))
    pairs = set()
    for route in app.routes:
        assert isinstance(route, Route)
        for method in route.methods or ():
            if method != "HEAD":
                pairs.add((route.path, method.lower()))
    return pairs


def test_openapi_paths_match_the_routes(srv: RunningServer) -> None:
    doc = httpx.get(f"{srv.base_url}/openapi.json").json()
    documented = {(path, m) for path, ops in doc["paths"].items() for m in ops}
    assert documented == _served(extensions=True)
    for path, ops in doc["paths"].items():
        for op in ops.values():
            ref = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            if ref:
                name = ref["schema"]["$ref"].rsplit("/", 1)[1]
                assert name in doc["components"]["schemas"], (path, name)


def test_fire_schema_names_its_fields(srv: RunningServer) -> None:
    schemas = httpx.get(f"{srv.base_url}/openapi.json").json()["components"]["schemas"]
    fire = schemas["FireBody"]
    assert set(fire["properties"]) == {
        "payload_override", "merge_strategy", "send_at", "idempotency_key",
    }
    assert fire.get("additionalProperties") is False
