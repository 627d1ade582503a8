"""The `limit` / `offset` query parameters of the list endpoints, validated."""

from __future__ import annotations

from starlette.requests import Request

from cuemsg.server.errors import invalid


def page(request: Request, default: int = 50, most: int = 1000) -> tuple[int, int]:
    def number(name: str, value: int, low: int, high: int) -> int:
        raw = request.query_params.get(name)
        if raw is None:
            return value
        if not raw.isdigit() or not low <= int(raw) <= high:
            raise invalid(name, f"must be an integer from {low} to {high}, not {raw!r}")
        return int(raw)

    return number("limit", default, 1, most), number("offset", 0, 0, 10**9)
