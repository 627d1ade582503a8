"""`POST /v1/auth/register`: a new tenant and its API key (no key needed)."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cuemsg.server import wire
from cuemsg.server.answers import Registered
from cuemsg.server.keys import hash_key, new_api_key, new_tenant_id
from cuemsg.server.responses import ok
from cuemsg.server.state import Server


async def register(request: Request, server: Server) -> Response:
    body = wire.decode(await server.read_body(request), wire.Register)
    key = new_api_key()
    await server.storage.create_tenant(new_tenant_id(), body.email, hash_key(key), server.clock())
    return ok(Registered(api_key=key, email=body.email), 201)
