"""Per-tenant limits over real HTTP with small settings: listings capped by
bytes, big listings rendered off the event loop, quotas on unsettled
executions, stored bytes and requests a minute (issue 10, defect 6)."""

from __future__ import annotations

import asyncio
import base64
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cuemsg.server.responses import OFFLOAD_BYTES, listing
from cuemsg.testing import RunningServer, run_server
from tests.server.conftest import Api, error_of


@pytest.fixture
def limited(backend: str, request: pytest.FixtureRequest) -> Iterator[Callable[..., RunningServer]]:
    """Servers with the settings given, on the current backend, stopped at the end."""
    from contextlib import ExitStack

    with ExitStack() as stack:

        def start(**settings: Any) -> RunningServer:
            db = ":memory:"
            if backend == "postgres":
                db = request.getfixturevalue("postgres_url")()
            return stack.enter_context(run_server(db=db, sweep_interval=0.05, **settings))

        yield start


def _tenant(srv: RunningServer) -> Api:
    return Api(srv.base_url, srv.new_key())


def test_a_listing_page_stops_at_the_byte_cap(limited: Callable[..., RunningServer]) -> None:
    srv = limited(max_page_bytes=50_000)
    api = _tenant(srv)
    cue = api.cue(payload={"task": "big"})
    for i in range(6):
        api.fire(cue["id"], payload_override={"n": i, "blob": "x" * 20_000})
    answer = api.http.get("/v1/executions", params={"limit": 6})
    assert answer.status_code == 200
    page = answer.json()
    # 20 KB each: the third would take the page past 50 KB.
    assert len(page["executions"]) == 2
    assert page["truncated"] is True and page["total"] == 6
    seen: list[int] = []
    offset = 0
    while offset < 6:
        page = api.http.get("/v1/executions", params={"limit": 6, "offset": offset}).json()
        assert page["executions"], page
        seen += [e["payload"]["n"] for e in page["executions"]]
        offset += len(page["executions"])
    assert sorted(seen) == list(range(6))
    assert "truncated" not in page  # the last page ends the listing
    claimable = api.http.get("/v1/executions/claimable", params={"task": "big"}).json()
    assert len(claimable["executions"]) == 2
    api.close()


def test_a_cursor_pages_through_byte_capped_pages(limited: Callable[..., RunningServer]) -> None:
    srv = limited(max_page_bytes=50_000)
    api = _tenant(srv)
    cue = api.cue(payload={"task": "big"})
    for i in range(5):
        api.fire(cue["id"], payload_override={"n": i, "blob": "x" * 20_000})
    seen: list[int] = []
    params: dict[str, Any] = {"limit": 5}
    while True:
        page = api.http.get("/v1/executions", params=params).json()
        seen += [e["payload"]["n"] for e in page["executions"]]
        # With a cursor, `total` counts what is older than it: what is left.
        assert page["total"] == 5 - len(seen) + len(page["executions"])
        if "truncated" not in page:
            break
        params["before"] = page["executions"][-1]["id"]
    assert seen == [4, 3, 2, 1, 0]  # newest first, each once; the last page is not "truncated"
    api.close()


def test_one_item_over_the_cap_is_still_answered(limited: Callable[..., RunningServer]) -> None:
    srv = limited(max_page_bytes=1_000)
    api = _tenant(srv)
    cue = api.cue(payload={"task": "big"})
    api.fire(cue["id"], payload_override={"blob": "x" * 5_000})
    page = api.http.get("/v1/executions").json()
    assert len(page["executions"]) == 1 and "truncated" not in page
    api.close()


@pytest.mark.parametrize("size", [10, OFFLOAD_BYTES + 1])
def test_big_listings_are_rendered_off_the_event_loop(size: int) -> None:
    rendered_on: list[threading.Thread] = []

    def render(item: int) -> dict[str, int]:
        rendered_on.append(threading.current_thread())
        return {"n": item}

    async def main() -> bytes:
        answer = await listing("items", [1, 2], render, size, total=2)
        return bytes(answer.body)

    assert asyncio.run(main()) == b'{"items":[{"n":1},{"n":2}],"total":2}'
    on_loop = [t is threading.main_thread() for t in rendered_on]
    assert on_loop == ([True, True] if size < OFFLOAD_BYTES else [False, False])


def test_pending_quota_answers_429_naming_it(limited: Callable[..., RunningServer]) -> None:
    srv = limited(quota_pending=3)
    api, other = _tenant(srv), _tenant(srv)
    cue = api.cue(payload={"task": "q"})
    for _ in range(3):
        api.fire(cue["id"])
    refused = api.http.post(f"/v1/cues/{cue['id']}/fire", json={})
    err = error_of(refused, 429, "quota_exceeded")
    assert err["field"] == "pending_executions" and "pending_executions" in err["message"]
    assert refused.headers["Retry-After"] == "1"
    batch = api.http.post("/v1/fire", json={"fires": [{"cue_id": cue["id"]}]})
    error_of(batch, 429, "quota_exceeded")
    # Another tenant is not held back by this one's quota.
    other.fire(other.cue(payload={"task": "q"})["id"])
    # Settling one makes room (the usage is read again before a refusal).
    claimed = api.claim(task="q").json()
    done = api.http.post(
        f"/v1/executions/{claimed['execution_id']}/outcome",
        json={"success": True},
        headers={"X-Worker-Id": "w1"},
    )
    assert done.status_code == 200
    time.sleep(0.3)
    api.fire(cue["id"])
    api.close()
    other.close()


def test_stored_bytes_quota_answers_507_naming_it(limited: Callable[..., RunningServer]) -> None:
    srv = limited(quota_stored_bytes=9_000)
    api, other = _tenant(srv), _tenant(srv)
    cue = api.cue(payload={"task": "b"})
    # Random text: PostgreSQL stores it uncompressed, so both backends count ~4 KB.
    blob = {"blob": base64.b64encode(os.urandom(3_000)).decode()}
    api.fire(cue["id"], payload_override=blob)
    api.fire(cue["id"], payload_override=blob)
    refused = api.http.post(f"/v1/cues/{cue['id']}/fire", json={"payload_override": blob})
    err = error_of(refused, 507, "quota_exceeded")
    assert err["field"] == "stored_bytes" and "stored_bytes" in err["message"]
    other.fire(other.cue(payload={"task": "b"})["id"], payload_override=blob)
    api.close()
    other.close()


def test_requests_per_minute_are_limited_per_tenant(limited: Callable[..., RunningServer]) -> None:
    srv = limited(rate_limit=5)
    api, other = _tenant(srv), _tenant(srv)
    for _ in range(5):
        assert api.http.get("/v1/cues").status_code == 200
    refused = api.http.get("/v1/cues")
    err = error_of(refused, 429, "rate_limited")
    assert err["field"] == "requests_per_minute"
    assert int(refused.headers["Retry-After"]) >= 1
    assert other.http.get("/v1/cues").status_code == 200
    api.close()
    other.close()


def test_quota_settings_are_checked() -> None:
    from cuemsg.server.settings import ServerSettings

    for field in ("quota_pending", "quota_stored_bytes", "registration_rate"):
        with pytest.raises(ValueError, match=field):
            ServerSettings(**dict[str, Any]({field: -1}))
    with pytest.raises(ValueError, match="max_page_bytes"):
        ServerSettings(max_page_bytes=0)
