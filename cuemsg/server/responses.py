"""JSON answers: a body encoded by msgspec, a listing (encoded in a thread
when it is large), and an `ApiProblem` as its error body."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import msgspec
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from cuemsg.server.errors import ApiProblem

_json = msgspec.json.Encoder()
T = TypeVar("T")
#: Listings whose payloads pass this many bytes are rendered in a thread.
OFFLOAD_BYTES = 256 * 1024


def ok(body: Any, status: int = 200) -> Response:
    return Response(_json.encode(body), status, media_type="application/json")


def problem(p: ApiProblem) -> Response:
    return Response(_json.encode(p.body()), p.status, p.headers, media_type="application/json")


async def listing(
    key: str, items: Sequence[T], render: Callable[[T], Any], size: int, **rest: Any
) -> Response:
    """`{key: [render(item), ...], **rest}`. With `size` (payload bytes) past
    `OFFLOAD_BYTES` the items are rendered in a worker thread, one at a time:
    the GIL is handed back between items, so other tenants' requests keep
    being served while a big page is encoded."""

    def build() -> bytes:
        tail = b"]," + _json.encode(rest)[1:] if rest else b"]}"
        head = b'{"' + key.encode() + b'":['
        return head + b",".join([_json.encode(render(item)) for item in items]) + tail

    body = build() if size < OFFLOAD_BYTES else await run_in_threadpool(build)
    return Response(body, 200, media_type="application/json")
