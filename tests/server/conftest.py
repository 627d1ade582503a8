"""The contract suite runs over real HTTP on loopback, once per storage backend."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from cuemsg.testing import RunningServer


class Api:
    """A raw HTTP view of one tenant: the suite tests the wire, not our client."""

    def __init__(self, base_url: str, key: str) -> None:
        self.key = key
        self.http = httpx.Client(
            base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        )

    def cue(self, name: str | None = None, **fields: Any) -> dict[str, Any]:
        import secrets

        body = {"name": name or f"cue-{secrets.token_hex(4)}", "transport": "worker", **fields}
        answer = self.http.post("/v1/cues", json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json())

    def fire(self, cue_id: str, **body: Any) -> dict[str, Any]:
        answer = self.http.post(f"/v1/cues/{cue_id}/fire", json=body)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def claim(self, worker: str = "w1", **body: Any) -> httpx.Response:
        return self.http.post("/v1/executions/claim", json={"worker_id": worker, **body})

    def execution(self, execution_id: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/executions/{execution_id}")
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    def close(self) -> None:
        self.http.close()


def error_of(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """Assert a CueAPI error body with this status and code; return its `error`."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == {"error"}, body
    assert body["error"]["code"] == code, body
    assert body["error"]["status"] == status
    assert body["error"]["message"]
    return dict(body["error"])


@pytest.fixture
def srv(shared_server: Callable[..., RunningServer]) -> RunningServer:
    return shared_server()


@pytest.fixture
def api_factory(srv: RunningServer) -> Iterator[Callable[[], Api]]:
    made: list[Api] = []

    def make() -> Api:
        api = Api(srv.base_url, srv.new_key())
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api_on(shared_server: Callable[..., RunningServer]) -> Iterator[Callable[..., Api]]:
    """A fresh tenant on a shared server with these settings (e.g. `lease_seconds=0.3`)."""
    made: list[Api] = []

    def make(**settings: Any) -> Api:
        srv = shared_server(**settings)
        api = Api(srv.base_url, srv.new_key())
        made.append(api)
        return api

    yield make
    for api in made:
        api.close()


@pytest.fixture
def api(api_factory: Callable[[], Api]) -> Api:
    """A fresh tenant on the shared server: tests never see each other's data."""
    return api_factory()
