"""`POST /v1/auth/register`: a new tenant and its API key (no key needed).

Open or closed by the `registration` setting (closed by default on a server
bound beyond loopback); when open, each client address may register
`registration_rate` times a minute (loopback clients are not counted: they
can read the database's development key anyway).
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cuemsg.server import wire
from cuemsg.server.answers import Registered
from cuemsg.server.errors import ApiProblem
from cuemsg.server.keys import hash_key, new_api_key, new_tenant_id
from cuemsg.server.responses import ok
from cuemsg.server.settings import LOOPBACK_NAMES
from cuemsg.server.state import Server


async def register(request: Request, server: Server) -> Response:
    if not server.settings.registration_open:
        raise ApiProblem(
            403,
            "registration_closed",
            "registration is closed on this server: ask its operator for a key "
            "(`cuemsg keys create`), or start it with --registration open",
        )
    address = request.client.host if request.client else ""
    if address not in LOOPBACK_NAMES:
        server.registrations.hit(address)
    body = wire.decode(await server.read_body(request), wire.Register)
    key = new_api_key()
    await server.storage.create_tenant(new_tenant_id(), body.email, hash_key(key), server.clock())
    return ok(Registered(api_key=key, email=body.email), 201)
