"""Fixtures of the mailbox tests: the embedded server over real HTTP, with and without
its extensions, and mailboxes with short polls.

Every test that takes `server` runs twice: "ext" (the extensions listed) and
"plain" (a plain CueAPI). Each test registers its own tenant.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from cuemsg.cueapi import AsyncCueClient, CueClient
from cuemsg.mailbox import Mailbox
from cuemsg.testing import RunningServer, run_server

POLL = 0.3  # poll_wait of test mailboxes: stop() takes effect this fast


@pytest.fixture(scope="module", params=[True, False], ids=["ext", "plain"])
def server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    with run_server(extensions=request.param, db=":memory:", sweep_interval=0.05) as srv:
        yield srv


@pytest.fixture(scope="module", params=[True, False], ids=["ext", "plain"])
def short_lease_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Leases of one second, swept every 50 ms: a dead receiver's message comes back fast."""
    with run_server(
        extensions=request.param, db=":memory:", lease_seconds=1.0, sweep_interval=0.05
    ) as srv:
        yield srv


@pytest.fixture(scope="module", params=[True, False], ids=["ext", "plain"])
def three_second_lease_server(request: pytest.FixtureRequest) -> Iterator[RunningServer]:
    """Leases of three seconds, swept every 50 ms: for a test that needs one lease to
    run out while others are renewed (renewals every second leave a loaded machine
    two seconds of slack, where one-second leases left it two thirds of one)."""
    with run_server(
        extensions=request.param, db=":memory:", lease_seconds=3.0, sweep_interval=0.05
    ) as srv:
        yield srv


@pytest.fixture
def client(server: RunningServer) -> Iterator[CueClient]:
    with CueClient(server.new_key(), server.base_url) as c:
        yield c


@pytest.fixture
async def aclient(server: RunningServer) -> AsyncIterator[AsyncCueClient]:
    async with AsyncCueClient(server.new_key(), server.base_url) as c:
        yield c


@pytest.fixture
def mailboxes(client: CueClient) -> Iterator[Callable[..., Mailbox]]:
    """Factory of mailboxes on `client` (short polls), all closed at the end."""
    opened: list[Mailbox] = []

    def open_(name: str, **options: Any) -> Mailbox:
        options.setdefault("poll_wait", POLL)
        mb = Mailbox.open(client, name, **options)
        opened.append(mb)
        return mb

    yield open_
    for mb in opened:
        mb.close()


@contextlib.contextmanager
def serving(mb: Mailbox, handler: Callable[..., Any], **options: Any) -> Iterator[Mailbox]:
    """Run `mb.serve(handler)` in a thread for the block; stop and join it after."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            mb.serve(handler, **options)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield mb
    finally:
        mb.stop()
        thread.join(timeout=30)
        assert not thread.is_alive(), "serve() did not stop"
        if errors:
            raise errors[0]
