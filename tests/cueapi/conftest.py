"""Fixtures of the wire-client tests: our own server, with extensions and without.

Every test that takes `server` (or a client) runs twice: against the
embedded server with its extensions listed ("ext") and as a plain CueAPI
("plain"), so both paths of the client stay tested. Each test registers its
own tenant, so tests sharing a module's server never see each other's data.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.testing import RunningServer, run_server


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module", params=[True, False], ids=["ext", "plain"])
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with run_server(extensions=request.param, db=":memory:", sweep_interval=0.05) as srv:
        yield srv


@pytest.fixture
def extensions_on(server: RunningServer) -> bool:
    return bool(server.settings.extensions)


@pytest.fixture
def api_key(server: RunningServer) -> str:
    """A fresh tenant's key: the test's data is its own."""
    return server.new_key()


@pytest.fixture
def client(server: RunningServer, api_key: str) -> Iterator[CueClient]:
    with CueClient(api_key, server.base_url) as c:
        yield c


@pytest.fixture
async def aclient(server: RunningServer, api_key: str) -> AsyncIterator[AsyncCueClient]:
    async with AsyncCueClient(api_key, server.base_url) as c:
        yield c
