"""The sweeper survives a storage fault and does not flood the log."""

from __future__ import annotations

import logging
import time
from urllib.parse import unquote

import httpx
import psycopg
import pytest

from cuemsg.server.settings import ServerSettings
from cuemsg.testing import run_server
from tests.conftest import PG_DSN, PostgresURLs


@pytest.mark.postgres
def test_sweep_failures_are_logged_once_and_serving_goes_on(
    postgres_url: PostgresURLs, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres_url()
    schema = unquote(url).rsplit("search_path=", 1)[1]
    caplog.set_level(logging.WARNING, logger="cuemsg.server")
    with run_server(ServerSettings(db=url, sweep_interval=0.02)) as srv:
        # A real fault: the tables vanish under the running server.
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        time.sleep(0.5)  # ~25 sweep passes, all failing
        assert httpx.get(f"{srv.base_url}/health").json()["status"] == "ok"
    failed = [r for r in caplog.records if "sweep" in r.getMessage()]
    assert failed and failed[0].exc_info is not None
    assert len(failed) <= 2, [r.getMessage() for r in failed]
