"""Open endpoints that describe the server: `GET /v1/info` (version and
extensions), `GET /health` (liveness and the counters the benchmark reads)
and `GET /openapi.json`."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from cuemsg.server.answers import Health, Info
from cuemsg.server.responses import ok
from cuemsg.server.state import Server


async def info(request: Request, server: Server) -> Response:
    from cuemsg import __version__

    body = Info(version=__version__, server="cuemsg")
    if server.extensions:
        body.extensions = sorted(server.extensions)
    return ok(body)


async def health(request: Request, server: Server) -> Response:
    return ok(
        Health(
            status="ok",
            requests=server.stats.requests,
            claim_attempts=server.stats.claim_attempts,
            waiting_claims=server.storage.notifier.waiting(),
            handed_claims=server.storage.notifier.handed,
        )
    )


async def openapi(request: Request, server: Server) -> Response:
    # Imported here: the document is generated from the route table, which imports us.
    from cuemsg.server.openapi import openapi_document

    return ok(openapi_document(server.extensions, metrics=server.settings.metrics))
