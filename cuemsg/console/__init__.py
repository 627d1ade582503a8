"""The web console that `cuemsg serve` shows at `/console`: its static files and
the small ASGI app that serves them.

The console is plain HTML, CSS and JavaScript modules shipped in this package
(no CDN, no build step). It holds no secrets of its own: the browser keeps
the API key the operator pastes in sessionStorage and calls the same `/v1`
API as every client, so this module only hands out files. Only the names in
`ASSETS` are served (this directory also holds Python files), each with a
Content-Security-Policy that allows nothing but this origin, so a message
body can never run script in the page that holds the key.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response
from starlette.routing import Route

__all__ = ["ASSETS", "console_routes"]

HERE = Path(__file__).parent

#: The files the console is made of, by the name the browser asks for.
ASSETS: dict[str, str] = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "views.css": "text/css; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "dom.js": "text/javascript; charset=utf-8",
    "feed.js": "text/javascript; charset=utf-8",
    "mailboxes.js": "text/javascript; charset=utf-8",
    "messages.js": "text/javascript; charset=utf-8",
    "timeline.js": "text/javascript; charset=utf-8",
    "dead.js": "text/javascript; charset=utf-8",
}

_HEADERS = {
    # Scripts, styles and API calls from this origin only; no inline script, no framing.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # The files change with the package: always revalidate, never serve a stale app.
    "Cache-Control": "no-cache",
}


async def _asset(request: Request) -> Response:
    name = request.path_params.get("name") or "index.html"
    media_type = ASSETS.get(name)
    if media_type is None:
        return Response(f"no console file {name!r}\n", 404, _HEADERS, "text/plain")
    return FileResponse(HERE / name, media_type=media_type, headers=_HEADERS)


async def _to_index(request: Request) -> Response:
    # Module imports in index.html are relative: the page must live at /console/.
    return RedirectResponse("/console/", status_code=308)


def console_routes() -> list[Route]:
    """The routes the server app adds: `/console` (a redirect), `/console/` and
    `/console/{file}`; plain routes, so a wrong method is the API's usual 405."""
    return [
        Route("/console", _to_index, methods=["GET", "HEAD"]),
        Route("/console/", _asset, methods=["GET", "HEAD"]),
        Route("/console/{name:str}", _asset, methods=["GET", "HEAD"]),
    ]
