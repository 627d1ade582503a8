"""SIGKILL of the server mid-stream, twice, on both backends: a sender and a
receiver keep going after each restart on the same database, and every
message arrives, none handled twice (redeliveries are removed by dedupe)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults.helpers import ServerProcess, Traffic

TOTAL = 300


@pytest.fixture
def server(db_url: str, tmp_path: Path) -> Iterator[ServerProcess]:
    # Short leases: what a killed server had handed out comes back within seconds.
    proc = ServerProcess(
        db_url, tmp_path / "serve.log", "--lease-seconds", "2", "--sweep-interval", "0.1"
    )
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


def test_sigkill_mid_stream_loses_nothing(server: ServerProcess) -> None:
    traffic = Traffic(server.base_url, server.register(), TOTAL)
    traffic.start()
    try:
        for at in (TOTAL // 3, 2 * TOTAL // 3):
            traffic.wait_sent(at)
            server.kill()
            time.sleep(0.5)  # the clients meet a dead port for a while
            server.start()
    finally:
        traffic.finish()
    counts = traffic.check()
    assert server.starts == 3
    backend = "postgres" if server.db.startswith("postgresql:") else "sqlite"
    print(f"\nSIGKILL x2 on {backend}: {counts}")
