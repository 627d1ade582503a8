"""Run the embedded server in the background, for tests (yours and ours).

```python
from cuemsg.testing import run_server

with run_server() as srv:          # a fresh :memory: server on a free loopback port
    client = CueClient(srv.api_key, srv.base_url)
```
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from cuemsg.server.app import create_app
from cuemsg.server.keys import create_dev_key
from cuemsg.server.run import Uvicorn
from cuemsg.server.settings import ServerSettings

__all__ = ["RunningServer", "free_port", "run_server"]


def _ephemeral_range() -> tuple[int, int]:
    """The ports the OS hands to outgoing connections (Linux; elsewhere a common default)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        return 32768, 60999
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago, for a server started just after.

    It is picked below the OS's range for outgoing connections: a port from
    that range can be taken as the local end of some client's connection
    between this check and the server's bind (a busy test run makes many).
    """
    low, _ = _ephemeral_range()
    for port in random.sample(range(max(1024, low - 12000), low), 50):
        with socket.socket() as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # all taken: let the OS pick one
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    """A server started by `run_server`: where it is and a key to use it."""

    base_url: str
    api_key: str
    settings: ServerSettings
    port: int
    _server: Uvicorn = field(repr=False)
    _thread: threading.Thread = field(repr=False)

    def new_key(self, email: str = "tenant@example.com") -> str:
        """Register another tenant; returns its API key."""
        answer = httpx.post(f"{self.base_url}/v1/auth/register", json={"email": email})
        answer.raise_for_status()
        return str(answer.json()["api_key"])

    @property
    def requests(self) -> int:
        """Requests the server has answered so far (read from /health)."""
        return int(httpx.get(f"{self.base_url}/health").json()["requests"])

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)


@contextlib.contextmanager
def run_server(
    settings: ServerSettings | None = None,
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    **overrides: Any,
) -> Iterator[RunningServer]:
    """Start uvicorn with the embedded app in a thread; stop it on exit.

    Args:
        settings: server settings; default a `:memory:` database.
        host: interface to bind (loopback by default).
        port: port to bind; default a free one.
        **overrides: fields of `ServerSettings` to change (e.g. `extensions=False`).

    Yields:
        A `RunningServer` with `base_url` and a registered `api_key`.
    """
    settings = (settings or ServerSettings(db=":memory:")).replace(**overrides)
    if settings.host is None:
        settings = settings.replace(host=host)  # the Host guard knows the bound name
    port = port or free_port(host)
    app = create_app(settings)
    server = Uvicorn(
        app,
        host=host,
        port=port,
        access_log=settings.access_log,
        log_level="info" if settings.access_log else "warning",
        lifespan="on",
        loop="asyncio",
    )
    loops: list[asyncio.AbstractEventLoop] = []

    async def serve() -> None:
        loops.append(asyncio.get_running_loop())
        await server.serve()

    # uvicorn installs signal handlers only in the main thread; in ours it skips them.
    thread = threading.Thread(target=lambda: asyncio.run(serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the embedded server did not start on {host}:{port}")
        time.sleep(0.005)
    base_url = f"http://{host}:{port}"
    running = RunningServer(base_url, "", settings, port, server, thread)
    try:
        if settings.registration_open:
            running.api_key = running.new_key("dev@localhost")
        else:  # registration closed: a key made on the server's own loop, as `keys create` does
            made = asyncio.run_coroutine_threadsafe(
                create_dev_key(app.state.server.storage), loops[0]
            )
            running.api_key = made.result(timeout=10)
        yield running
    finally:
        running.stop()
