"""SQLite schema versions: an older file is migrated in place, a newer one refused."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import msgspec
import pytest

from cuemsg import StorageOpenError
from cuemsg.server.storage.base import CueRow, ExecutionRow, OutcomeRecord
from cuemsg.server.storage.sqlite import SQLiteStorage, by_status
from cuemsg.server.storage.sqlite_schema import MIGRATIONS, SCHEMA, SCHEMA_VERSION
from tests.storage.helpers import T0, keyed, make_cue, new_fire

pytestmark = pytest.mark.anyio

_V1_INDEXES = """
CREATE INDEX ix_exec_claim_task ON executions (tenant_id, task, status, scheduled_for);
CREATE INDEX ix_exec_claim ON executions (tenant_id, status, scheduled_for);
CREATE INDEX ix_exec_due ON executions (status, scheduled_for);
CREATE INDEX ix_exec_lease ON executions (status, lease_expires_at);
"""


def _indexes(path: Path) -> set[str]:
    with closing(sqlite3.connect(path)) as db, db:
        rows = db.execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
    return {r[0] for r in rows if not r[0].startswith("sqlite_")}


async def test_a_version_1_file_is_migrated_and_keeps_its_rows(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with closing(sqlite3.connect(path)) as db, db:
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
    assert {"ix_exec_ready_task", "ix_exec_scheduled", "ix_exec_leased"} <= names
    assert "ix_exec_due_ready" not in names
    assert "ix_exec_status" not in names and "ix_exec_settled" in names


async def test_a_newer_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    store = SQLiteStorage(str(path))
    await store.open()
    await store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    await store.close()
    again = SQLiteStorage(str(path))
    with pytest.raises(StorageOpenError, match="newer than this cuemsg"):
        await again.open()
    with closing(sqlite3.connect(path)) as db, db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    assert version == (str(SCHEMA_VERSION + 1),)


async def test_a_version_4_file_keeps_its_counters_and_keys(tmp_path: Path) -> None:
    """Version 5 moved a cue's fire counters out of its document into columns and
    made the idempotency table WITHOUT ROWID: a file of version 4 keeps both."""
    path = tmp_path / "v4.db"
    cue = CueRow(
        id="cue_old",
        tenant_id="ten_old",
        name="inbox",
        payload={"task": "t"},
        created_at=T0,
        updated_at=T0,
        fired_count=3,
        last_run=T0 + 5,
    )
    with closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA + MIGRATIONS[3] + MIGRATIONS[4])
        db.execute("INSERT INTO meta (key, value) VALUES ('schema_version', '4')")
        db.execute(
            "INSERT INTO cues (id, tenant_id, name, status, created_at, doc, next_run) "
            "VALUES (?, ?, ?, 'active', ?, ?, NULL)",
            (cue.id, cue.tenant_id, cue.name, T0, msgspec.json.encode(cue)),
        )
        db.execute(
            "INSERT INTO executions (id, tenant_id, cue_id, status, task, payload, transport, "
            "triggered_by, scheduled_for, created_at, updated_at, max_attempts) VALUES "
            "('exe_old', 'ten_old', 'cue_old', 'pending', 't', '{\"task\": \"t\"}', 'worker', "
            "'manual_fire', ?, ?, ?, 3)",
            (T0, T0, T0),
        )
        db.execute(
            "INSERT INTO idempotency VALUES ('ten_old', 'cue_old', 'k1', 'hash-same', "
            "'exe_old', ?)",
            (T0,),
        )
    store = SQLiteStorage(str(path))
    await store.open()
    try:
        got = await store.get_cue("ten_old", "cue_old")
        assert got is not None and (got.fired_count, got.last_run) == (3, T0 + 5)
        # The key survived the table's rebuild: a repeat finds the first execution.
        [again] = await store.fire("ten_old", [keyed("cue_old", "k1", at=T0 + 6)], T0 + 6)
        assert again.id == "exe_old"
        [new] = await store.fire("ten_old", [keyed("cue_old", "k2", at=T0 + 7)], T0 + 7)
        assert new.id != "exe_old"
        got = await store.get_cue("ten_old", "cue_old")
        assert got is not None and (got.fired_count, got.last_run) == (4, T0 + 7)
        [listed], _ = await store.list_cues("ten_old", status=None, limit=5, offset=0)
        assert (listed.fired_count, listed.last_run) == (4, T0 + 7)
    finally:
        await store.close()
    with closing(sqlite3.connect(path)) as db, db:
        [ddl] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'idempotency'").fetchone()
    assert "WITHOUT ROWID" in ddl


async def _older_file(path: Path, version: int, *statements: str) -> CueRow:
    """A file with tenant `ten_a` and a cue, turned back to `version` by `statements`."""
    store = SQLiteStorage(str(path))
    await store.open()
    await store.create_tenant("ten_a", "a@example.com", "hash", T0)
    cue = await make_cue(store, "ten_a")
    await store.close()
    with closing(sqlite3.connect(path)) as db, db:
        for statement in statements:
            db.execute(statement)
        db.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (str(version),))
    return cue


async def test_a_version_6_file_trades_its_due_index_and_wakes_what_is_scheduled(
    tmp_path: Path,
) -> None:
    """Version 7 drops `ix_exec_due_ready` (every ready execution by due time) for
    `ix_exec_scheduled`, which holds only those due later than they were made: a
    fire for now is not in it, a scheduled one is, and the sweep finds it there."""
    path = tmp_path / "v6.db"
    cue = await _older_file(
        path,
        6,
        "DROP INDEX ix_exec_scheduled",
        "CREATE INDEX ix_exec_due_ready ON executions (scheduled_for) "
        "WHERE status IN ('pending', 'retry_ready')",
    )
    store = SQLiteStorage(str(path))
    await store.open()
    try:
        assert await store.get_meta("schema_version") == str(SCHEMA_VERSION)
        [now] = await store.fire("ten_a", [new_fire(cue.id)], T0)
        [later] = await store.fire("ten_a", [new_fire(cue.id, at=T0 + 60)], T0)
        db = store.db
        held = db.execute(
            "SELECT id FROM executions INDEXED BY ix_exec_scheduled "
            "WHERE status IN ('pending', 'retry_ready') AND scheduled_for > created_at"
        ).fetchall()
        assert held == [(later.id,)]
        plan = db.execute(
            "EXPLAIN QUERY PLAN SELECT tenant_id, task, count(*) FROM executions "
            "WHERE status IN ('pending', 'retry_ready') AND scheduled_for > ? "
            "AND scheduled_for <= ? AND scheduled_for > created_at GROUP BY tenant_id, task",
            (T0, T0 + 61),
        ).fetchall()
        assert any("ix_exec_scheduled" in row[3] for row in plan), plan
        waiter = store.notifier.subscribe("ten_a", "t", None)
        try:
            await store.sweep(T0 + 61, since=T0, unclaimed_timeout=0)
            assert await waiter.wait(5)  # the scheduled one came due: a claim is woken
        finally:
            waiter.close()
        claimed = await store.claim_next(
            "ten_a", "w", task="t", agent=None, now=T0 + 61, lease_seconds=30, limit=5
        )
        assert [e.id for e in claimed] == [now.id, later.id]
    finally:
        await store.close()
    assert "ix_exec_due_ready" not in _indexes(path)


async def test_a_version_7_file_keeps_only_settled_executions_in_its_status_index(
    tmp_path: Path,
) -> None:
    """Version 8 drops `ix_exec_status` (every execution by status: each fire, claim
    and outcome moved its entry) for `ix_exec_settled`, which holds the settled
    only; a listing by any status still reads an index that holds that status,
    never the tenant's whole history, and finds the same rows."""
    path = tmp_path / "v7.db"
    cue = await _older_file(
        path,
        7,
        "DROP INDEX ix_exec_settled",
        "CREATE INDEX ix_exec_status ON executions (tenant_id, status, seq)",
    )
    store = SQLiteStorage(str(path))
    await store.open()
    try:
        assert await store.get_meta("schema_version") == str(SCHEMA_VERSION)
        fired = [(await store.fire("ten_a", [new_fire(cue.id)], T0))[0] for _ in range(4)]
        claimed = await store.claim_next(
            "ten_a", "w", task="t", agent=None, now=T0, lease_seconds=30, limit=3
        )
        done = OutcomeRecord(success=True, recorded_at=T0)
        failed = OutcomeRecord(success=False, error="no", recorded_at=T0)
        await store.record_outcomes("ten_a", [(claimed[0].id, done)], "w")
        await store.record_outcomes("ten_a", [(claimed[1].id, failed)], "w")
        db = store.db
        settled = db.execute(
            "SELECT id, status FROM executions INDEXED BY ix_exec_settled "
            "WHERE status NOT IN ('pending', 'retry_ready', 'delivering')"
        ).fetchall()
        statuses = {e.id: e.status for e in [*await _all(store)]}
        assert sorted(settled) == sorted(
            (i, s) for i, s in statuses.items() if s not in ("pending", "retry_ready", "delivering")
        )
        assert len(settled) == 2  # the pending and the delivering ones are not in it
        for status in ("pending", "retry_ready", "delivering", "success", "failed", "missed"):
            listed, total = await store.list_executions(
                "ten_a", cue_id=None, status=status, limit=10, offset=0
            )
            want = [e.id for e in reversed(fired) if statuses[e.id] == status]
            assert [e.id for e in listed] == want and total == len(want), status
            table, term = by_status(status)
            plan = db.execute(
                f"EXPLAIN QUERY PLAN SELECT id FROM {table} "
                f"WHERE tenant_id = ? AND status = ?{term} ORDER BY seq DESC",
                ("ten_a", status),
            ).fetchall()
            assert not any("ix_exec_events" in row[3] for row in plan), plan
        assert await store.count_unsettled("ten_a") == 2  # one pending, one delivering
    finally:
        await store.close()
    assert "ix_exec_status" not in _indexes(path)


async def _all(store: SQLiteStorage) -> list[ExecutionRow]:
    rows, _ = await store.list_executions("ten_a", cue_id=None, status=None, limit=50, offset=0)
    return rows
