"""Fixtures shared by every suite: a clean environment, servers, PostgreSQL."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from cuemsg.server.settings import ServerSettings
from cuemsg.testing import RunningServer, run_server

PG_DSN = os.environ.get("CUEMSG_TEST_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith(("CUEAPI_", "CUEMSG_")) and name != "CUEMSG_TEST_POSTGRES_DSN":
            monkeypatch.delenv(name)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used here, or None when it can."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'cuemsg[postgres]')"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_DSN} is not reachable: {exc}"
    return None


class PostgresURLs:
    """Makes URLs, each on a fresh schema; `stack` holds what must stop before they go."""

    def __init__(self) -> None:
        self.schemas: list[str] = []
        self.stack = ExitStack()

    def __call__(self) -> str:
        schema = f"cuemsg_t_{secrets.token_hex(4)}"
        self.schemas.append(schema)
        sep = "&" if "?" in PG_DSN else "?"
        return f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[PostgresURLs]:
    """Factory of URLs, each on a fresh schema of the test database, dropped at the end.

    Skips where PostgreSQL cannot be reached, except when
    CUEMSG_REQUIRE_POSTGRES=1 (CI sets it): then it fails.
    """
    problem = _postgres_problem()
    if problem is not None:
        if os.environ.get("CUEMSG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"CUEMSG_REQUIRE_POSTGRES=1 but {problem}")
        pytest.skip(problem)
    import psycopg

    urls = PostgresURLs()
    with urls.stack:  # servers on these schemas stop first
        yield urls
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        for schema in urls.schemas:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    """The storage backend a test runs on: every contract test runs on each."""
    return str(request.param)


@pytest.fixture
def db_url(backend: str, request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """A fresh database of the current backend (a SQLite file, or a PostgreSQL schema)."""
    if backend == "postgres":
        urls: PostgresURLs = request.getfixturevalue("postgres_url")
        return urls()
    return str(tmp_path / "cuemsg.db")


@pytest.fixture(scope="session")
def _servers() -> Iterator[dict[Any, RunningServer]]:
    with ExitStack() as stack:
        cache: dict[Any, RunningServer] = {}
        cache["_stack"] = stack  # type: ignore[assignment]
        yield cache


@pytest.fixture
def shared_server(
    backend: str, request: pytest.FixtureRequest, _servers: dict[Any, RunningServer]
) -> Callable[..., RunningServer]:
    """Factory of servers shared for the session, one per (backend, settings).

    Tests isolate themselves by registering their own tenant (`srv.new_key()`).
    """

    def get(**settings: Any) -> RunningServer:
        key = (backend, tuple(sorted(settings.items())))
        if key not in _servers:
            stack: ExitStack = _servers["_stack"]  # type: ignore[assignment]
            db = ":memory:"
            if backend == "postgres":
                urls: PostgresURLs = request.getfixturevalue("postgres_url")
                db, stack = urls(), urls.stack
            _servers[key] = stack.enter_context(
                run_server(ServerSettings(db=db, sweep_interval=0.05), **settings)
            )
        return _servers[key]

    return get
