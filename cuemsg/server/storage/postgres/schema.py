"""The PostgreSQL schema: the migrations, in order, and `migrate`, which finds
the schema to use (the first of the `search_path`) and brings it up to
`SCHEMA_VERSION` in one transaction under an advisory lock.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from psycopg import AsyncConnection, sql

from cuemsg._exceptions import StorageError

log = logging.getLogger("cuemsg.server.postgres")


# Migration N (1-based) takes the schema from version N-1 to N. Never edit a
# released migration: append a new one (it runs in the same transaction as the
# version bump, under the advisory lock).
_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE cuemsg_tenants (
        id text PRIMARY KEY,
        email text NOT NULL,
        created_at double precision NOT NULL);
    CREATE TABLE cuemsg_api_keys (
        key_hash text PRIMARY KEY,
        tenant_id text NOT NULL,
        created_at double precision NOT NULL);
    CREATE TABLE cuemsg_cues (
        id text PRIMARY KEY,
        tenant_id text NOT NULL,
        name text NOT NULL,
        status text NOT NULL,
        created_at double precision NOT NULL,
        fired_count bigint NOT NULL DEFAULT 0,
        last_run double precision,
        doc jsonb NOT NULL,
        UNIQUE (tenant_id, name));
    CREATE INDEX cuemsg_cues_tenant ON cuemsg_cues (tenant_id, created_at, id);
    CREATE TABLE cuemsg_executions (
        seq bigserial PRIMARY KEY,
        id text NOT NULL UNIQUE,
        tenant_id text NOT NULL,
        cue_id text NOT NULL,
        status text NOT NULL,
        task text,
        agent text,
        payload jsonb NOT NULL,
        transport text NOT NULL,
        triggered_by text NOT NULL,
        scheduled_for double precision NOT NULL,
        created_at double precision NOT NULL,
        updated_at double precision NOT NULL,
        attempts integer NOT NULL DEFAULT 0,
        max_attempts integer NOT NULL,
        claimed_by_worker text,
        claimed_at double precision,
        lease_expires_at double precision,
        outcome jsonb);
    -- Claims: partial indexes hold only claimable rows, already in claim order,
    -- so "oldest first, LIMIT n" reads n index entries however long the backlog.
    CREATE INDEX cuemsg_exec_ready_task ON cuemsg_executions (tenant_id, task, scheduled_for, seq)
        WHERE status IN ('pending', 'retry_ready');
    CREATE INDEX cuemsg_exec_ready ON cuemsg_executions (tenant_id, scheduled_for, seq)
        WHERE status IN ('pending', 'retry_ready');
    -- The sweep: due / unclaimed work, and expired leases.
    CREATE INDEX cuemsg_exec_due ON cuemsg_executions (scheduled_for)
        WHERE status IN ('pending', 'retry_ready');
    CREATE INDEX cuemsg_exec_lease ON cuemsg_executions (lease_expires_at)
        WHERE status = 'delivering';
    -- Listings, newest first.
    CREATE INDEX cuemsg_exec_tenant ON cuemsg_executions (tenant_id, seq);
    CREATE INDEX cuemsg_exec_cue ON cuemsg_executions (tenant_id, cue_id, seq);
    CREATE TABLE cuemsg_idempotency (
        tenant_id text NOT NULL,
        cue_id text NOT NULL,
        key text NOT NULL,
        body_hash text NOT NULL,
        execution_id text NOT NULL,
        created_at double precision NOT NULL,
        PRIMARY KEY (tenant_id, cue_id, key));
    CREATE INDEX cuemsg_idem_age ON cuemsg_idempotency (created_at);
    CREATE TABLE cuemsg_workers (
        tenant_id text NOT NULL,
        worker_id text NOT NULL,
        handlers jsonb NOT NULL,
        last_heartbeat double precision NOT NULL,
        PRIMARY KEY (tenant_id, worker_id));
    """,
    # 2: schedules and webhooks. The cue's next run as a column (the scheduler's
    # claim and index; 0 = to be computed, for a scheduled cue made before), an
    # execution's `detail`, and each tenant's webhook signing secret.
    """
    ALTER TABLE cuemsg_cues ADD COLUMN next_run double precision;
    UPDATE cuemsg_cues SET doc = jsonb_set(doc, '{next_run}', '0')
        WHERE jsonb_typeof(doc->'next_run') IS DISTINCT FROM 'number'
        AND jsonb_typeof(doc->'schedule') = 'object';
    UPDATE cuemsg_cues SET next_run = (doc->>'next_run')::double precision;
    CREATE INDEX cuemsg_cues_due ON cuemsg_cues (next_run) WHERE status = 'active';
    ALTER TABLE cuemsg_executions ADD COLUMN detail jsonb;
    -- Webhook deliveries due: only webhook rows, so a worker backlog costs nothing here.
    CREATE INDEX cuemsg_exec_webhook_due ON cuemsg_executions (tenant_id, scheduled_for, seq)
        WHERE transport = 'webhook' AND status IN ('pending', 'retry_ready');
    CREATE TABLE cuemsg_webhook_secrets (
        tenant_id text PRIMARY KEY,
        secret text NOT NULL,
        created_at double precision NOT NULL);
    """,
    # 3: the event feed (cuemsg/server/storage/feed.py). Stamps come from one
    # sequence through `cuemsg_next_event()`, which first gives the transaction
    # its id: a feed reader that waits out the transactions in progress when it
    # read the sequence then sees every stamp up to the value it read.
    """
    CREATE SEQUENCE cuemsg_event_seq;
    CREATE FUNCTION cuemsg_next_event() RETURNS bigint LANGUAGE plpgsql AS $$
    BEGIN
        PERFORM pg_current_xact_id();
        RETURN nextval('cuemsg_event_seq');
    END $$;
    ALTER TABLE cuemsg_executions
        ADD COLUMN fired_seq bigint,
        ADD COLUMN claimed_seq bigint,
        ADD COLUMN lost_seq bigint,
        ADD COLUMN lost_worker text,
        ADD COLUMN lost_at double precision,
        ADD COLUMN lost_claimed_at double precision,
        ADD COLUMN done_seq bigint,
        ADD COLUMN redriven_seq bigint,
        ADD COLUMN redriven_to text,
        ADD COLUMN redrive_of text;
    -- Inserts are stamped by default (rows from before the feed keep none).
    ALTER TABLE cuemsg_executions ALTER COLUMN fired_seq SET DEFAULT cuemsg_next_event();
    ALTER TABLE cuemsg_executions ADD COLUMN event_seq bigint GENERATED ALWAYS AS
        (GREATEST(fired_seq, claimed_seq, lost_seq, done_seq, redriven_seq)) STORED;
    CREATE INDEX cuemsg_exec_events ON cuemsg_executions (tenant_id, event_seq);
    """,
    # The feed keeps the claim a lost lease was, when it is claimed again.
    "ALTER TABLE cuemsg_executions ADD COLUMN lost_claim_seq bigint, "
    "ADD COLUMN lost_attempt integer;",
)
SCHEMA_VERSION = len(_MIGRATIONS)


def parse_search_path(value: str) -> list[str]:
    """The entries of a `SHOW search_path` answer, unquoted (`"$user"` stays `$user`)."""
    entries: list[str] = []
    for match in re.finditer(r'\s*("(?:[^"]|"")*"|[^,]*)\s*(?:,|$)', value):
        item = match.group(1).strip()
        if not item:
            continue
        if item.startswith('"') and item.endswith('"') and len(item) >= 2:
            entries.append(item[1:-1].replace('""', '"'))
        else:
            entries.append(item.lower())
    return entries


async def schema_exists(conn: AsyncConnection[Any], schema: str) -> bool:
    cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
    return await cur.fetchone() is not None


async def migrate(conn: AsyncConnection[Any]) -> str:
    """Create the schema if need be and apply the migrations it lacks, atomically;
    the name of the schema the tables live in."""
    async with conn.transaction():
        row = await (await conn.execute("SHOW search_path")).fetchone()
        user = await (await conn.execute("SELECT current_user")).fetchone()
        assert row is not None and user is not None
        schema = None
        for entry in parse_search_path(row[0]):
            if entry == "$user":
                if await schema_exists(conn, user[0]):
                    schema = user[0]
                    break
            elif entry not in ("pg_catalog", "pg_temp") and not entry.startswith("pg_temp_"):
                schema = entry
                break
        if schema is None:
            raise StorageError(
                f"no schema to create cuemsg's tables in (search_path is {row[0]!r}); "
                "name one with ?options=-csearch_path%3D<schema> in the URL"
            )
        # Replicas starting together: one migrates, the others wait and then see it done.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtext(%s))", (f"cuemsg.migrate:{schema}",)
        )
        if not await schema_exists(conn, schema):
            await conn.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS cuemsg_meta (key text PRIMARY KEY, value text NOT NULL)"
        )
        found = await (
            await conn.execute("SELECT value FROM cuemsg_meta WHERE key = 'schema_version'")
        ).fetchone()
        version = int(found[0]) if found else 0
        if version > SCHEMA_VERSION:
            raise StorageError(
                f"the cuemsg tables in schema {schema!r} have version {version}, newer "
                f"than this cuemsg understands ({SCHEMA_VERSION}); upgrade cuemsg"
            )
        for number in range(version + 1, SCHEMA_VERSION + 1):
            log.info("migrating schema %r to version %d", schema, number)
            await conn.execute(_MIGRATIONS[number - 1])
        if version != SCHEMA_VERSION:
            await conn.execute(
                "INSERT INTO cuemsg_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (str(SCHEMA_VERSION),),
            )
    return str(schema)
