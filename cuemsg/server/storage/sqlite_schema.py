"""The SQLite schema: its tables, its indexes and the migrations between versions.

`SQLiteStorage._prepare` (in `sqlite.py`) runs `SCHEMA` on every open, then
the steps of `MIGRATIONS` from the file's version up to `SCHEMA_VERSION`,
then `INDEXES`, in one transaction. Version 3's step and indexes belong to
the timed work and live beside it in `sqlite_timed.py`; version 4 adds the
event feed's stamps (`feed.py`); version 5 the cue's fire counters as columns;
version 6 the lost claim's stamp and attempt; version 7 trades the index of every
ready execution by due time for one of those scheduled later (`ix_exec_scheduled`);
version 8 trades the index of every execution by status for one of the settled
ones (`ix_exec_settled`).
"""

from __future__ import annotations

from cuemsg.server.storage.feed import SEQ_NAMES, STAMP_COLUMNS
from cuemsg.server.storage.sqlite_timed import MIGRATION_3, TIMED_INDEXES

SCHEMA_VERSION = 8
BASE_VERSION = 2  # what SCHEMA creates

# Partial indexes hold only the rows a claim or the sweep looks for, already in
# claim order (the rowid `seq` ends every index): a claim reads one entry and
# sorts nothing, and a settled execution leaves them for good. Each index costs
# about 30 us per write here, so there are few: a claim without a task (rare:
# mailboxes always claim by task) reads `ix_exec_ready_task` and sorts.
# `ix_exec_scheduled` holds only executions due later than they were made (a
# `send_at`, a retry's backoff), for the sweep's wake-ups: a message sent for
# now, the one-way cycle's, is never written to it. `ix_exec_settled` lists the
# settled by status; an unsettled status is listed from `ix_exec_ready_task` or
# `ix_exec_leased` (`status_where` in `sqlite.py`), so a message on its way
# (pending, then delivering) writes no status index until it settles.
INDEXES = """
CREATE INDEX IF NOT EXISTS ix_exec_ready_task ON executions (tenant_id, task, scheduled_for)
    WHERE status IN ('pending', 'retry_ready');
CREATE INDEX IF NOT EXISTS ix_exec_scheduled ON executions (scheduled_for)
    WHERE status IN ('pending', 'retry_ready') AND scheduled_for > created_at;
CREATE INDEX IF NOT EXISTS ix_exec_leased ON executions (lease_expires_at)
    WHERE status = 'delivering';
CREATE INDEX IF NOT EXISTS ix_exec_settled ON executions (tenant_id, status, seq)
    WHERE status NOT IN ('pending', 'retry_ready', 'delivering');
CREATE INDEX IF NOT EXISTS ix_exec_events ON executions (tenant_id, event_seq);
"""
INDEXES += TIMED_INDEXES

#: Where claimable executions are read from: the index that holds only them (named:
#: without statistics SQLite may take a tenant's whole-history index instead).
READY = "executions INDEXED BY ix_exec_ready_task"

# The feed's position: the newest stamp of an execution (a virtual column, indexed).
_EVENT_SEQ = (
    "event_seq INTEGER GENERATED ALWAYS AS (max("
    + ", ".join(f"ifnull({name}, 0)" for name in SEQ_NAMES)
    + ")) VIRTUAL"
)

_IDEMPOTENCY = """
CREATE TABLE {} (
    tenant_id TEXT NOT NULL, cue_id TEXT NOT NULL, key TEXT NOT NULL,
    body_hash TEXT NOT NULL, execution_id TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, cue_id, key)) WITHOUT ROWID;
"""

# Steps from version N-1 to N, applied in order by open().
MIGRATIONS = {
    2: """
DROP INDEX IF EXISTS ix_exec_claim_task;
DROP INDEX IF EXISTS ix_exec_claim;
DROP INDEX IF EXISTS ix_exec_due;
DROP INDEX IF EXISTS ix_exec_lease;
""",
    3: MIGRATION_3,
    # The event feed's stamps (cuemsg/server/storage/feed.py).
    4: "".join(f"ALTER TABLE executions ADD COLUMN {n} {kind};\n" for n, kind in STAMP_COLUMNS)
    + f"ALTER TABLE executions ADD COLUMN {_EVENT_SEQ};\n",
    # A cue's fire counters in columns (as on PostgreSQL): a fire bumps them
    # in SQL instead of decoding and rewriting the cue's document.
    5: """
ALTER TABLE cues ADD COLUMN fired_count INTEGER NOT NULL DEFAULT 0;
ALTER TABLE cues ADD COLUMN last_run REAL;
UPDATE cues SET fired_count = ifnull(json_extract(doc, '$.fired_count'), 0),
    last_run = json_extract(doc, '$.last_run');
"""
    # Idempotency keys in their primary key's b-tree alone (WITHOUT ROWID): every
    # keyed fire (each message: its id is the key) writes one b-tree, not two.
    + _IDEMPOTENCY.format("idempotency_v5")
    + """
INSERT INTO idempotency_v5 SELECT tenant_id, cue_id, key, body_hash, execution_id, created_at
    FROM idempotency;
DROP TABLE idempotency;
ALTER TABLE idempotency_v5 RENAME TO idempotency;
""",
    # The feed keeps the claim a lost lease was, when it is claimed again.
    6: "ALTER TABLE executions ADD COLUMN lost_claim_seq INTEGER;\n"
    "ALTER TABLE executions ADD COLUMN lost_attempt INTEGER;\n",
    # Every fire and claim wrote `ix_exec_due_ready` (all ready executions by due
    # time); only the sweep read it. `ix_exec_scheduled` (in `INDEXES`) replaces it.
    7: "DROP INDEX IF EXISTS ix_exec_due_ready;\n",
    # Every fire, claim and outcome wrote `ix_exec_status` (each status change
    # moves the entry); `ix_exec_settled` (in `INDEXES`) holds the settled only.
    8: "DROP INDEX IF EXISTS ix_exec_status;\n",
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS tenants (
    id TEXT PRIMARY KEY, email TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, created_at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS cues (
    id TEXT PRIMARY KEY, tenant_id TEXT NOT NULL, name TEXT NOT NULL,
    status TEXT NOT NULL, created_at REAL NOT NULL, doc TEXT NOT NULL,
    UNIQUE (tenant_id, name));
CREATE INDEX IF NOT EXISTS ix_cues_tenant ON cues (tenant_id, created_at);
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    tenant_id TEXT NOT NULL,
    cue_id TEXT NOT NULL,
    status TEXT NOT NULL,
    task TEXT,
    agent TEXT,
    payload TEXT NOT NULL,
    transport TEXT NOT NULL,
    triggered_by TEXT NOT NULL,
    scheduled_for REAL NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL,
    claimed_by_worker TEXT,
    claimed_at REAL,
    lease_expires_at REAL,
    outcome TEXT);
CREATE INDEX IF NOT EXISTS ix_exec_cue ON executions (tenant_id, cue_id, seq);
CREATE TABLE IF NOT EXISTS idempotency (
    tenant_id TEXT NOT NULL, cue_id TEXT NOT NULL, key TEXT NOT NULL,
    body_hash TEXT NOT NULL, execution_id TEXT NOT NULL, created_at REAL NOT NULL,
    PRIMARY KEY (tenant_id, cue_id, key));
CREATE TABLE IF NOT EXISTS workers (
    tenant_id TEXT NOT NULL, worker_id TEXT NOT NULL, handlers TEXT NOT NULL,
    last_heartbeat REAL NOT NULL, PRIMARY KEY (tenant_id, worker_id));
"""
