"""The hot lane: the message path's routes answered without Starlette's layers.

A message costs a fire, a claim and an outcome (or a claim carrying the
previous outcome); a profile of that cycle showed a large share of the
server's samples in the layers around each handler: Starlette's error and
exception middleware, our `ErrorGuard` and `HostGuard`, the router trying
~40 routes in turn, `request_response`'s wrappers, and a send wrapper per
layer. `App` (the `Starlette` that `create_app` returns) answers the routes
in `HOT` directly: it matches the method and the path segments, checks the
`Host` with the same `HostCheck` as `HostGuard`, calls the very endpoint
Starlette's `Route` would call (authentication, metrics and the feed bump
are inside it), answers an exception with the guard's own
`answer_exception`, and sends the answer in the two sends ASGI requires.
Anything else, HEAD included, goes through Starlette unchanged, so 404 and
405 answers stay Starlette's.

The lane takes a request only when Starlette would have routed it to the
same route: an earlier route that could match the same path (e.g.
`GET /v1/executions/claimable` before `GET /v1/executions/{execution_id}`)
is checked first and wins, as in Starlette's router. Hot handlers raise no
`HTTPException` (only Starlette's routing does), so the app's handler of
those is not needed here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import Receive, Scope, Send

from cuemsg.server.guard import ErrorGuard, answer_exception
from cuemsg.server.hosts import HostCheck

__all__ = ["HOT", "App", "Lane", "whole"]

#: The routes the lane answers (method, template): the message path.
HOT = frozenset(
    {
        ("POST", "/v1/cues/{cue_id}/fire"),
        ("POST", "/v1/fire"),
        ("POST", "/v1/executions/claim"),
        ("POST", "/v1/executions/{execution_id}/claim"),
        ("POST", "/v1/executions/{execution_id}/outcome"),
        ("POST", "/v1/executions/outcomes"),
        ("POST", "/v1/executions/{execution_id}/heartbeat"),
        ("GET", "/v1/cues/{cue_id}"),
        ("GET", "/v1/executions/{execution_id}"),
    }
)


def _segments(template: str) -> list[tuple[str, bool]] | None:
    """A template's segments as (text, is a parameter); None when a parameter has a
    convertor (`{n:int}`): the lane matches only plain `[^/]+` parameters."""
    parts: list[tuple[str, bool]] = []
    for part in template.split("/"):
        if part.startswith("{") and part.endswith("}"):
            if ":" in part:
                return None
            parts.append((part[1:-1], True))
        elif "{" in part:
            return None
        else:
            parts.append((part, False))
    return parts


class _Hot:
    """One hot route: its literal and parameter segments, and the earlier routes that
    Starlette would try first on the same paths."""

    def __init__(
        self,
        route: Route,
        method: str,
        segments: list[tuple[str, bool]],
        earlier: Sequence[BaseRoute],
    ) -> None:
        self.route = route
        self.endpoint = route.endpoint
        self.literals = tuple((i, text) for i, (text, param) in enumerate(segments) if not param)
        self.params = tuple((i, name) for i, (name, param) in enumerate(segments) if param)
        self.shadows: list[BaseRoute] = []
        paths = set()
        for other in earlier:
            if not isinstance(other, Route):
                self.shadows.append(other)  # a Mount or Host: asked at each request
                continue
            if other.methods is not None and method not in other.methods:
                continue
            theirs = _segments(other.path)
            if theirs is None:
                self.shadows.append(other)  # a convertor: its regex is asked
            elif len(theirs) == len(segments) and all(
                a == b or p or q for (a, p), (b, q) in zip(theirs, segments, strict=True)
            ):  # the same count of segments, and no two literals differ: may overlap
                if any(param for _, param in theirs):
                    self.shadows.append(other)
                else:
                    paths.add(other.path)
        self.shadow_paths = frozenset(paths)

    def match(self, parts: list[str], scope: Scope) -> dict[str, Any] | None:
        for i, text in self.literals:
            if parts[i] != text:
                return None
        params = {}
        for i, name in self.params:
            if not parts[i]:
                return None  # `[^/]+`: a parameter is never empty
            params[name] = parts[i]
        if scope["path"] in self.shadow_paths:
            return None
        for other in self.shadows:
            if other.matches(scope)[0] is Match.FULL:
                return None
        return params


class Lane:
    """The hot routes of an app, by method and number of path segments."""

    def __init__(self, routes: Sequence[BaseRoute], hosts: HostCheck | None) -> None:
        self.hosts = hosts
        self.table: dict[tuple[str, int], list[_Hot]] = {}
        for i, route in enumerate(routes):
            if not isinstance(route, Route) or route.methods is None:
                continue
            method = next((m for m in route.methods if m != "HEAD"), "")
            segments = _segments(route.path)
            if (method, route.path) not in HOT or segments is None:
                continue
            hot = _Hot(route, method, segments, routes[:i])
            self.table.setdefault((method, len(segments)), []).append(hot)

    def match(self, scope: Scope) -> tuple[_Hot, dict[str, Any]] | None:
        """The hot route Starlette would route this request to, and its path parameters."""
        if scope.get("root_path"):
            return None  # mounted under a prefix: Starlette strips it, the lane does not
        path: str = scope["path"]
        parts = path.split("/")
        for hot in self.table.get((scope["method"], len(parts)), ()):
            params = hot.match(parts, scope)
            if params is not None:
                return hot, params
        return None

    async def answer(
        self, hot: _Hot, params: dict[str, Any], scope: Scope, receive: Receive
    ) -> Response:
        """The answer the middleware stack would have given: the Host check, the
        endpoint, the guard's answer to an exception (shared with `protocol.py`)."""
        scope["route"] = hot.route
        scope["endpoint"] = hot.endpoint
        scope["path_params"] = params
        response = self.hosts.refusal(scope) if self.hosts is not None else None
        if response is None:
            try:
                response = await hot.endpoint(Request(scope, receive))
            except Exception as exc:
                response = answer_exception(exc, scope)
        return response

    async def serve(
        self, hot: _Hot, params: dict[str, Any], scope: Scope, receive: Receive, send: Send
    ) -> None:
        """Answer through ASGI, in the two sends it requires."""
        response = await self.answer(hot, params, scope, receive)
        if whole(response):
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": response.raw_headers,
                }
            )
            await send({"type": "http.response.body", "body": response.body})
        else:  # a streamed answer: the guard watches it, as on Starlette's path
            await ErrorGuard(response)(scope, receive, send)


def whole(response: Response) -> bool:
    """Whether an answer is one body with nothing to run after it (every hot handler's)."""
    return type(response) is Response and response.background is None


class App(Starlette):
    """Starlette, with the hot lane in front of its middleware stack."""

    lane: Lane | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        lane = self.lane
        if lane is not None and scope["type"] == "http":
            hit = lane.match(scope)
            if hit is not None:
                scope["app"] = self
                scope["router"] = self.router
                await lane.serve(hit[0], hit[1], scope, receive, send)
                return
        await super().__call__(scope, receive, send)
