"""PostgreSQL restarted under load: the server reconnects (pool and LISTEN),
long-polling receivers resume, and nothing is lost or handled twice.

Runs where the test can restart the cluster (`pg_ctlcluster`, as in CI, where
CUEMSG_REQUIRE_POSTGRES=1 makes a missing PostgreSQL a failure). PostgreSQL is
started again at the end whatever happened.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from tests.conftest import PG_DSN, PostgresURLs
from tests.faults.helpers import ServerProcess, Traffic

pytestmark = pytest.mark.postgres

TOTAL = 300


def _cluster() -> list[str]:
    """The pg_ctlcluster command for the local cluster; skips (or fails in CI) without one."""
    versions = sorted(os.listdir("/etc/postgresql")) if os.path.isdir("/etc/postgresql") else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        why = "no local cluster to restart (pg_ctlcluster and /etc/postgresql are needed)"
        if os.environ.get("CUEMSG_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return ["pg_ctlcluster", "--skip-systemctl-redirect", versions[-1], "main"]


def _up(timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(PG_DSN, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.Error:
            time.sleep(0.2)
    return False


@pytest.fixture
def cluster() -> Iterator[list[str]]:
    command = _cluster()
    try:
        yield command
    finally:
        # Whatever happened, leave PostgreSQL running for everyone else.
        if not _up(5):
            subprocess.run([*command, "start"], check=False, timeout=120)
            assert _up(60), "PostgreSQL did not come back after the restart test"


def test_restart_under_load_loses_nothing(
    cluster: list[str], postgres_url: PostgresURLs, tmp_path: Path
) -> None:
    server = ServerProcess(
        postgres_url(), tmp_path / "serve.log", "--lease-seconds", "5", "--sweep-interval", "0.1"
    )
    server.start()
    try:
        traffic = Traffic(server.base_url, server.register(), TOTAL)
        traffic.start()
        try:
            traffic.wait_sent(TOTAL // 3)
            started = time.monotonic()
            subprocess.run([*cluster, "restart"], check=True, timeout=120, capture_output=True)
            assert _up(60)
            outage = time.monotonic() - started
        finally:
            traffic.finish()
        counts = traffic.check()
        assert server.proc is not None and server.proc.poll() is None  # it rode it out
        print(f"\nPostgreSQL restart ({outage:.1f}s) under load: {counts}")
    finally:
        server.stop()
