"""Errors no handler answers (a storage failure, a bug) get a CueAPI error body,
are logged once, and leave the keep-alive connection open, over real HTTP."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from contextlib import closing

import httpx
import pytest

from cuemsg.server.guard import problem_for
from cuemsg.server.settings import ServerSettings
from cuemsg.testing import RunningServer, run_server
from tests.server.conftest import error_of


@pytest.fixture
def file_server(db_url: str) -> Iterator[RunningServer]:
    with run_server(ServerSettings(db=db_url)) as srv:
        yield srv


def _drop_workers_table(db_url: str) -> None:
    """A real storage fault: the table behind `GET /v1/workers` disappears."""
    if db_url.startswith("postgresql://"):
        import psycopg

        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("DROP TABLE cuemsg_workers")
        return
    with closing(sqlite3.connect(db_url, timeout=10)) as db, db:
        db.execute("DROP TABLE workers")


def _local_address(answer: httpx.Response) -> object:
    """The client end of the TCP connection that carried `answer` ("closed" once gone)."""
    try:
        return answer.extensions["network_stream"].get_extra_info("client_addr")
    except OSError:
        return "closed"


def test_a_storage_error_keeps_the_connection_and_is_logged_once(
    file_server: RunningServer, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    # uvicorn's loggers do not propagate to the root: listen to them directly.
    uvicorn_log = logging.getLogger("uvicorn")
    uvicorn_log.addHandler(caplog.handler)
    try:
        with httpx.Client(
            base_url=file_server.base_url,
            headers={"Authorization": f"Bearer {file_server.new_key()}"},
            limits=httpx.Limits(max_connections=1),
        ) as http:
            first = http.get("/v1/workers")
            assert first.status_code == 200, first.text
            _drop_workers_table(db_url)
            caplog.clear()
            with caplog.at_level(logging.WARNING):
                failed = http.get("/v1/workers")
                after = http.get("/v1/cues")
            ends = {_local_address(a) for a in (first, failed, after)}
    finally:
        uvicorn_log.removeHandler(caplog.handler)
    assert failed.status_code in (500, 503), failed.text
    assert failed.json()["error"]["code"] in ("internal_error", "storage_unavailable")
    assert after.status_code == 200, after.text
    assert len(ends) == 1, ends  # one connection carried all three
    reports = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(reports) == 1, [r.getMessage() for r in reports]
    assert "/v1/workers" in reports[0].getMessage()


def test_handled_errors_keep_the_connection(file_server: RunningServer) -> None:
    with httpx.Client(
        base_url=file_server.base_url,
        headers={"Authorization": f"Bearer {file_server.new_key()}"},
        limits=httpx.Limits(max_connections=1),
    ) as http:
        answers = [
            http.get("/v1/cues/cue_nothere0000"),
            http.post("/v1/cues", content=b"{not json"),
            http.delete("/v1/info"),
            http.get("/v1/cues"),
        ]
        ends = {_local_address(a) for a in answers}
    error_of(answers[0], 404, "cue_not_found")
    error_of(answers[1], 422, "validation_error")
    error_of(answers[2], 405, "method_not_allowed")
    assert answers[3].status_code == 200
    assert len(ends) == 1, ends


def test_what_each_unanswered_exception_becomes() -> None:
    from cuemsg import StorageError, StorageFull

    full = problem_for(StorageFull("disk full"))
    assert (full.status, full.code) == (507, "storage_full")
    assert full.headers == {"Retry-After": "30"}
    assert "storage is full" in full.message
    down = problem_for(StorageError("connection lost"))
    assert (down.status, down.code) == (503, "storage_unavailable")
    assert down.headers == {"Retry-After": "1"}
    bug = problem_for(KeyError("x"))
    assert (bug.status, bug.code, bug.message) == (
        500,
        "internal_error",
        "internal error: KeyError",
    )
