"""SQLite backend: one file in WAL mode (or `:memory:` for tests).

One connection, used from the event loop directly: every statement here takes
microseconds, so a hop to a thread would cost more than it saves, and a single
connection on a single loop makes each method's transaction atomic without
any locking of ours (two claims can never interleave). One server process per
file: the long-poll notifier is in-process (use PostgreSQL for replicas).

`synchronous=NORMAL` (the default here) survives a killed process but a power
cut may lose the last commits; `synchronous="FULL"` trades speed for that.

This module holds `SQLiteStorage`: opening (and migrating) a file, tenants
and keys, cues, fires and workers. Beside it: `sqlite_schema.py` (tables,
indexes, migrations), `sqlite_files.py` (opening a file, a full disk),
`sqlite_leases.py` (claims, heartbeats, outcomes), `sqlite_timed.py`
(schedules, webhook deliveries) and `sqlite_upkeep.py` (the sweep and the
purge), the last three mixed in.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import msgspec

from cuemsg._exceptions import StorageOpenError
from cuemsg.server.errors import cue_not_found
from cuemsg.server.notify import Notifier
from cuemsg.server.storage.base import (
    EXECUTION_COLUMNS,
    IDEMPOTENCY_TTL,
    CueRow,
    ExecutionRow,
    NewFire,
    OutcomeRecord,
    WorkerRow,
    claimable_where,
    cue_from_doc,
    execution_from_row,
    idempotency_conflict,
    name_reply,
    name_taken,
    new_execution,
    new_execution_ids,
    unknown_cursor,
    where_equal,
    within_bytes,
)
from cuemsg.server.storage.feed import SEQ_NAMES
from cuemsg.server.storage.sqlite_feed import SQLiteFeed
from cuemsg.server.storage.sqlite_files import connect, full_error, is_full, reason
from cuemsg.server.storage.sqlite_leases import Handed, SQLiteLeases
from cuemsg.server.storage.sqlite_release import SQLiteRelease
from cuemsg.server.storage.sqlite_schema import (
    BASE_VERSION,
    INDEXES,
    MIGRATIONS,
    READY,
    SCHEMA,
    SCHEMA_VERSION,
)
from cuemsg.server.storage.sqlite_timed import SQLiteTimed
from cuemsg.server.storage.sqlite_upkeep import SQLiteUpkeep

_EXEC_COLS = EXECUTION_COLUMNS

_encode = msgspec.json.Encoder().encode
T = TypeVar("T")
# The cue's document and its fire counters (columns of their own: `cue_from_doc`).
_CUE_COLS = "doc, fired_count, last_run"


def by_status(status: str) -> tuple[str, str]:
    """What a listing by `status` reads (the partial index holding that status) and
    the term that lets it (SQLite uses a partial index only when the query repeats
    its condition, written out: a bound `status = ?` does not count; the index is
    named, so a tenant's whole-history index is never taken instead)."""
    if status in ("pending", "retry_ready"):
        return READY, " AND status IN ('pending', 'retry_ready')"
    if status == "delivering":
        return "executions INDEXED BY ix_exec_leased", " AND status = 'delivering'"
    return (
        "executions INDEXED BY ix_exec_settled",
        " AND status NOT IN ('pending', 'retry_ready', 'delivering')",
    )


class SQLiteStorage(SQLiteLeases, SQLiteTimed, SQLiteUpkeep, SQLiteFeed, SQLiteRelease):
    """The default backend. `path` is a file path or `:memory:`."""

    def __init__(self, path: str = "cuemsg.db", *, synchronous: str = "NORMAL") -> None:
        if synchronous.upper() not in ("OFF", "NORMAL", "FULL", "EXTRA"):
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, not {synchronous!r}")
        self.path = path
        self.synchronous = synchronous.upper()
        self.notifier = Notifier()
        self._db: sqlite3.Connection | None = None
        self._stamp = 0  # the last event stamp given (one connection: commit order)
        #: What sweeps did, for /metrics: `lease_expired`, `missed`.
        self.swept: Counter[str] = Counter()

    # -- lifecycle -----------------------------------------------------------

    async def open(self) -> None:
        if self._db is not None:
            return
        db = connect(self.path)  # a StorageOpenError names the path and what is wrong
        try:
            self._prepare(db)
        except BaseException as exc:
            db.close()
            if isinstance(exc, sqlite3.Error):
                raise StorageOpenError(self.path, reason(exc)) from exc
            raise
        self._db = db

    def _prepare(self, db: sqlite3.Connection) -> None:
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA busy_timeout=5000")
        db.executescript(SCHEMA)
        # Each state change stamps its execution with the next number (the feed).
        db.create_function("cuemsg_next_event", 0, self._next_stamp)
        row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        # `SCHEMA` is version 2: a new file starts there and, like an older
        # one, takes each step since (ALTERs that would clash if it were newer).
        version = BASE_VERSION if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StorageOpenError(
                self.path,
                f"it has schema version {version}, newer than this cuemsg "
                f"understands ({SCHEMA_VERSION}); upgrade cuemsg",
            )
        steps = "".join(MIGRATIONS[v] for v in range(version + 1, SCHEMA_VERSION + 1))
        db.executescript(
            f"BEGIN; {steps} {INDEXES} "
            "INSERT INTO meta (key, value) VALUES ('schema_version', "
            f"'{SCHEMA_VERSION}') ON CONFLICT (key) DO UPDATE SET value = excluded.value; COMMIT;"
        )
        self._stamp = db.execute(
            "SELECT max(" + ", ".join(f"ifnull(max({n}), 0)" for n in SEQ_NAMES) + ") "
            "FROM executions"
        ).fetchone()[0]

    def _next_stamp(self) -> int:
        self._stamp += 1
        return self._stamp

    async def close(self) -> None:
        self.notifier.close()
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise RuntimeError("storage is not open")
        return self._db

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
                db.execute("COMMIT")  # can fail too (a full disk): then roll back
            except BaseException:
                # SQLite may have rolled back already (it does on SQLITE_FULL).
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            if is_full(exc):
                raise full_error(self.path, exc) from exc
            raise

    async def get_meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # -- tenants ---------------------------------------------------------------

    async def create_tenant(self, tenant_id: str, email: str, key_hash: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO tenants (id, email, created_at) VALUES (?, ?, ?)",
                (tenant_id, email, now),
            )
            db.execute(
                "INSERT INTO api_keys (key_hash, tenant_id, created_at) VALUES (?, ?, ?)",
                (key_hash, tenant_id, now),
            )

    async def tenant_for_key(self, key_hash: str) -> str | None:
        row = self.db.execute(
            "SELECT tenant_id FROM api_keys WHERE key_hash = ?", (key_hash,)
        ).fetchone()
        return row[0] if row else None

    async def add_api_key(self, tenant_id: str, key_hash: str, now: float) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO api_keys (key_hash, tenant_id, created_at) VALUES (?, ?, ?)",
                (key_hash, tenant_id, now),
            )

    async def count_unsettled(self, tenant_id: str) -> int:
        # Two counts, each from the partial index that holds those rows.
        row = self.db.execute(
            f"SELECT (SELECT count(*) FROM {READY} WHERE tenant_id = ?1 "
            "AND status IN ('pending', 'retry_ready')) + (SELECT count(*) FROM executions "
            "INDEXED BY ix_exec_leased WHERE tenant_id = ?1 AND status = 'delivering')",
            (tenant_id,),
        ).fetchone()
        return int(row[0])

    async def stored_bytes(self, tenant_id: str) -> int:
        row = self.db.execute(
            "SELECT coalesce(sum(length(payload)), 0) FROM executions WHERE tenant_id = ?",
            (tenant_id,),
        ).fetchone()
        return int(row[0])

    # -- cues ------------------------------------------------------------------

    async def create_cue(self, cue: CueRow) -> CueRow:
        try:
            with self._tx() as db:
                db.execute(
                    "INSERT INTO cues (id, tenant_id, name, status, created_at, doc, next_run, "
                    "fired_count, last_run) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        cue.id,
                        cue.tenant_id,
                        cue.name,
                        cue.status,
                        cue.created_at,
                        _encode(cue),
                        cue.next_run,
                        cue.fired_count,
                        cue.last_run,
                    ),
                )
        except sqlite3.IntegrityError as exc:
            raise name_taken(cue.name) from exc
        return cue

    async def get_cue(self, tenant_id: str, cue_id: str) -> CueRow | None:
        row = self.db.execute(
            f"SELECT {_CUE_COLS} FROM cues WHERE id = ? AND tenant_id = ?", (cue_id, tenant_id)
        ).fetchone()
        return cue_from_doc(*row) if row else None

    async def list_cues(
        self, tenant_id: str, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[CueRow], int]:
        where, args = where_equal("?", tenant_id=tenant_id, status=status)
        total = self.db.execute(f"SELECT count(*) FROM cues WHERE {where}", args).fetchone()[0]
        rows = self.db.execute(
            f"SELECT {_CUE_COLS} FROM cues WHERE {where} ORDER BY created_at, id LIMIT ? OFFSET ?",
            [*args, limit, offset],
        ).fetchall()
        return [cue_from_doc(*r) for r in rows], total

    async def update_cue(
        self, tenant_id: str, cue_id: str, changes: dict[str, Any], now: float
    ) -> CueRow | None:
        try:
            with self._tx() as db:
                row = db.execute(
                    f"SELECT {_CUE_COLS} FROM cues WHERE id = ? AND tenant_id = ?",
                    (cue_id, tenant_id),
                ).fetchone()
                if row is None:
                    return None
                cue = msgspec.structs.replace(cue_from_doc(*row), **changes, updated_at=now)
                db.execute(
                    "UPDATE cues SET name = ?, status = ?, doc = ?, next_run = ? WHERE id = ?",
                    (cue.name, cue.status, _encode(cue), cue.next_run, cue_id),
                )
        except sqlite3.IntegrityError as exc:
            raise name_taken(str(changes.get("name"))) from exc
        return cue

    async def delete_cue(self, tenant_id: str, cue_id: str) -> bool:
        with self._tx() as db:
            cur = db.execute("DELETE FROM cues WHERE id = ? AND tenant_id = ?", (cue_id, tenant_id))
            db.execute(
                "DELETE FROM idempotency WHERE tenant_id = ? AND cue_id = ?", (tenant_id, cue_id)
            )
        return cur.rowcount > 0

    # -- fire ------------------------------------------------------------------

    async def fire(self, tenant_id: str, fires: list[NewFire], now: float) -> list[ExecutionRow]:
        return self._firing(tenant_id, now, lambda db: self._fire_in(db, tenant_id, fires, now))

    def _firing(
        self,
        tenant_id: str,
        now: float,
        work: Callable[[sqlite3.Connection], tuple[T, list[ExecutionRow]]],
    ) -> T:
        """Run `work` (which makes executions: its result and those it created) in one
        transaction with the hand-over of new executions to parked claims; after the
        commit, wake those claims and the rest."""
        handed: list[Handed] = []
        try:
            with self._tx() as db:
                result, created = work(db)
                self._hand_over(db, tenant_id, created, now, handed)
        except BaseException:
            for waiter, _, _ in handed:  # nothing was claimed for them: they claim as usual
                waiter.hand([])
            raise
        for waiter, rows, settled in handed:
            waiter.hand(rows, settled)
        self._wake(tenant_id, created, now, handed)
        return result

    def _fire_in(
        self, db: sqlite3.Connection, tenant_id: str, fires: list[NewFire], now: float
    ) -> tuple[list[ExecutionRow], list[ExecutionRow]]:
        """The fires, inside the caller's transaction: (answers in order, those created).

        The executions are inserted together at the end (one `executemany`),
        and each cue's counters bumped once, in SQL (its document is only read).
        """
        out: list[ExecutionRow] = []
        created: dict[str, ExecutionRow] = {}  # by id: a repeat in the batch finds its first
        cues: dict[str, CueRow] = {}
        ids = new_execution_ids(len(fires))
        for i, fire in enumerate(fires):
            cue = cues.get(fire.cue_id)
            if cue is None:
                row = db.execute(
                    "SELECT doc, fired_count, last_run FROM cues WHERE id = ? AND tenant_id = ?",
                    (fire.cue_id, tenant_id),
                ).fetchone()
                if row is None:
                    problem = cue_not_found(fire.cue_id)
                    if len(fires) > 1:
                        problem.field = f"fires[{i}].cue_id"
                    raise problem
                cue = cues[fire.cue_id] = cue_from_doc(*row)
            execution_id = ids[i]
            if fire.idempotency_key is not None:
                first = _keyed(db, tenant_id, fire, execution_id, now, created)
                if isinstance(first, str):
                    raise idempotency_conflict(first, i, len(fires))
                if first is not None:
                    out.append(first)
                    continue
            execution = new_execution(tenant_id, cue, fire, execution_id, now)
            out.append(execution)
            created[execution_id] = execution
        if created:
            db.executemany(
                "INSERT INTO executions (id, tenant_id, cue_id, status, task, agent, payload, "
                "transport, triggered_by, scheduled_for, created_at, updated_at, attempts, "
                "max_attempts, fired_seq) VALUES (?, ?, ?, 'pending', ?, ?, ?, ?, "
                "'manual_fire', ?, ?, ?, 0, ?, cuemsg_next_event())",
                [
                    (
                        e.id,
                        tenant_id,
                        e.cue_id,
                        e.task,
                        e.agent,
                        _encode(e.payload),
                        e.transport,
                        e.scheduled_for,
                        now,
                        now,
                        e.max_attempts,
                    )
                    for e in created.values()
                ],
            )
            fired: dict[str, int] = {}  # per cue (a dict: cheaper than a Counter for one)
            for e in created.values():
                fired[e.cue_id] = fired.get(e.cue_id, 0) + 1
            for cue_id, count in fired.items():
                db.execute(
                    "UPDATE cues SET fired_count = fired_count + ?, last_run = ? WHERE id = ?",
                    (count, now, cue_id),
                )
        return out, list(created.values())

    def _wake(
        self,
        tenant_id: str,
        created: list[ExecutionRow],
        now: float,
        handed: Sequence[Handed] = (),
    ) -> None:
        """After the commit: wake the claims waiting for what is claimable now (not for
        what was handed to a waiter already: for those only the agent-filtered waiters
        and the event streams hear of it)."""
        taken = {row.id for _, rows, _ in handed for row in rows}
        due: Counter[str | None] = Counter()
        for e in created:
            if e.scheduled_for <= now and e.transport == "worker":
                due[e.task] += e.id not in taken
        for task, count in due.items():
            self.notifier.notify(tenant_id, task, count)

    # -- executions ------------------------------------------------------------

    async def get_execution(self, tenant_id: str, execution_id: str) -> ExecutionRow | None:
        row = self.db.execute(
            f"SELECT {_EXEC_COLS} FROM executions WHERE id = ? AND tenant_id = ?",
            (execution_id, tenant_id),
        ).fetchone()
        return execution_from_row(row) if row else None

    async def list_executions(
        self,
        tenant_id: str,
        *,
        cue_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
        before: str | None = None,
        max_bytes: int = 0,
    ) -> tuple[list[ExecutionRow], int]:
        clause, args = where_equal("?", tenant_id=tenant_id, cue_id=cue_id, status=status)
        table = "executions"  # by cue: ix_exec_cue
        if status is not None and cue_id is None:
            table, term = by_status(status)
            clause += term
        if before is not None:
            # The cursor is an id; its rowid `seq` keeps the page an index range.
            cursor = self.db.execute(
                "SELECT seq FROM executions WHERE id = ? AND tenant_id = ?", (before, tenant_id)
            ).fetchone()
            if cursor is None:
                raise unknown_cursor(before)
            clause, args = f"{clause} AND seq < ?", [*args, cursor[0]]
        total = self.db.execute(f"SELECT count(*) FROM {table} WHERE {clause}", args).fetchone()
        rows = within_bytes(
            self.db.execute(
                f"SELECT {_EXEC_COLS} FROM {table} WHERE {clause} "
                "ORDER BY seq DESC LIMIT ? OFFSET ?",
                [*args, limit, offset],
            ),
            max_bytes,
        )
        return [execution_from_row(r) for r in rows], total[0]

    async def list_claimable(
        self,
        tenant_id: str,
        *,
        task: str | None,
        agent: str | None,
        now: float,
        limit: int,
        max_bytes: int = 0,
    ) -> list[ExecutionRow]:
        where, args = claimable_where("?", tenant_id, task, agent, now)
        rows = within_bytes(
            self.db.execute(
                f"SELECT {_EXEC_COLS} FROM {READY} WHERE {where} "
                "ORDER BY scheduled_for, seq LIMIT ?",
                [*args, limit],
            ),
            max_bytes,
        )
        names: dict[str, str | None] = {}
        for row in rows:
            if row[2] not in names:
                name = self.db.execute("SELECT name FROM cues WHERE id = ?", (row[2],)).fetchone()
                names[row[2]] = name[0] if name else None
        return [execution_from_row(r, names[r[2]]) for r in rows]

    async def record_outcome_and_fire(
        self,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        outcome: OutcomeRecord,
        reply: NewFire,
        now: float,
    ) -> tuple[ExecutionRow, ExecutionRow]:
        Pair = tuple[ExecutionRow, ExecutionRow]

        def work(db: sqlite3.Connection) -> tuple[Pair, list[ExecutionRow]]:
            # The lease is checked before firing, so a refused outcome fires nothing.
            self._check_open(db, tenant_id, execution_id, worker_id)
            [fired], created = self._fire_in(db, tenant_id, [reply], now)
            settled = self._record(
                db, tenant_id, execution_id, worker_id, name_reply(outcome, fired.id)
            )
            return (settled, fired), created

        return self._firing(tenant_id, now, work)

    # -- workers ---------------------------------------------------------------

    async def worker_heartbeat(
        self, tenant_id: str, worker_id: str, handlers: list[str], now: float
    ) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT INTO workers (tenant_id, worker_id, handlers, last_heartbeat) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (tenant_id, worker_id) DO UPDATE SET "
                "handlers = excluded.handlers, last_heartbeat = excluded.last_heartbeat",
                (tenant_id, worker_id, _encode(handlers), now),
            )

    async def list_workers(self, tenant_id: str) -> list[WorkerRow]:
        rows = self.db.execute(
            "SELECT worker_id, handlers, last_heartbeat FROM workers WHERE tenant_id = ? "
            "ORDER BY last_heartbeat DESC",
            (tenant_id,),
        ).fetchall()
        return [
            WorkerRow(worker_id=r[0], handlers=msgspec.json.decode(r[1]), last_heartbeat=r[2])
            for r in rows
        ]


def _keyed(
    db: sqlite3.Connection,
    tenant_id: str,
    fire: NewFire,
    execution_id: str,
    now: float,
    made: dict[str, ExecutionRow],
) -> ExecutionRow | str | None:
    """Take `fire`'s idempotency key for `execution_id`, in one statement when it
    is new or expired: None (make the execution), the key's first execution
    (a repeat; `made` holds those of this batch, not inserted yet), or the key
    itself when it was used with another body (a conflict)."""
    key = fire.idempotency_key
    assert key is not None
    taken = db.execute(
        "INSERT INTO idempotency (tenant_id, cue_id, key, body_hash, execution_id, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (tenant_id, cue_id, key) DO UPDATE SET "
        "body_hash = excluded.body_hash, execution_id = excluded.execution_id, "
        "created_at = excluded.created_at WHERE idempotency.created_at <= ? RETURNING 1",
        (tenant_id, fire.cue_id, key, fire.body_hash, execution_id, now, now - IDEMPOTENCY_TTL),
    ).fetchone()
    if taken is not None:
        return None
    body_hash, first_id = db.execute(
        "SELECT body_hash, execution_id FROM idempotency "
        "WHERE tenant_id = ? AND cue_id = ? AND key = ?",
        (tenant_id, fire.cue_id, key),
    ).fetchone()
    if body_hash != fire.body_hash:
        return key
    first = made.get(first_id)
    if first is not None:
        return first
    row = db.execute(f"SELECT {_EXEC_COLS} FROM executions WHERE id = ?", (first_id,)).fetchone()
    if row is not None:
        return execution_from_row(row)
    # The key's first execution is gone (purged): this fire takes its place.
    db.execute(
        "UPDATE idempotency SET execution_id = ?, created_at = ? "
        "WHERE tenant_id = ? AND cue_id = ? AND key = ?",
        (execution_id, now, tenant_id, fire.cue_id, key),
    )
    return None
