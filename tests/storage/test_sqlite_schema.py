"""SQLite schema versions: an older file is migrated in place, a newer one refused."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from cuemsg import StorageOpenError
from cuemsg.server.storage.sqlite import SQLiteStorage
from cuemsg.server.storage.sqlite_schema import SCHEMA, SCHEMA_VERSION

pytestmark = pytest.mark.anyio

_V1_INDEXES = """
CREATE INDEX ix_exec_claim_task ON executions (tenant_id, task, status, scheduled_for);
CREATE INDEX ix_exec_claim ON executions (tenant_id, status, scheduled_for);
CREATE INDEX ix_exec_due ON executions (status, scheduled_for);
CREATE INDEX ix_exec_lease ON executions (status, lease_expires_at);
"""


def _indexes(path: Path) -> set[str]:
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {r[0] for r in rows if not r[0].startswith("sqlite_")}


async def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as db:
        db.executescript(SCHEMA + _V1_INDEXES)
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '1')")
        db.execute("INSERT INTO meta (key, value) VALUES ('dev_api_key', 'cue_sk_kept')")
    store = SQLiteStorage(str(path))
    await store.open()
    try:
        assert await store.get_meta("schema_version") == str(SCHEMA_VERSION)
        assert await store.get_meta("dev_api_key") == "cue_sk_kept"
    finally:
        await store.close()
    names = _indexes(path)
    assert not names & {"ix_exec_claim_task", "ix_exec_claim", "ix_exec_due", "ix_exec_lease"}
    assert {"ix_exec_ready_task", "ix_exec_due_ready", "ix_exec_leased"} <= names


async def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = SQLiteStorage(str(path))
    await store.open()
    await store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    await store.close()
    again = SQLiteStorage(str(path))
    with pytest.raises(StorageOpenError, match="newer than this cuemsg"):
        await again.open()
    with sqlite3.connect(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION + 1),)
