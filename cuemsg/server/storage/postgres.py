"""PostgreSQL backend: any number of server replicas on one database.

psycopg 3 (async) over a `psycopg_pool.AsyncConnectionPool` of autocommit
connections. What makes replicas safe and fast:

- Claims are one statement: a CTE picks the oldest claimable rows with
  `FOR UPDATE SKIP LOCKED` and the `UPDATE ... RETURNING` takes them, so
  concurrent claimers on any replica each get different executions and never
  wait on each other. A claim by id is one conditional `UPDATE`.
- Heartbeat and outcome are one conditional `UPDATE` on the happy path (the
  row lock it takes makes check and write atomic); when it matches nothing, a
  transaction re-reads the row `FOR UPDATE` to answer with the exact error.
- A single fire is two statements: read the cue (and a live idempotency key),
  then one statement that records the key, inserts the execution, bumps the
  cue's counters and NOTIFYs, atomically. Batches, repeats and races take the
  general path: one transaction. Two replicas firing the same
  `idempotency_key` at once meet on the idempotency table's primary key
  (`INSERT ... ON CONFLICT`): one execution is made, the other fire returns it.
- Claims, heartbeats and sweeps commit without waiting for the WAL flush (see
  `_RELAXED`); fires and outcomes wait for it.
- Long-polls: after a commit that makes work claimable, waiters of this
  process are woken directly and the other replicas through `NOTIFY` on a
  channel named after the schema (`cuemsg_<schema>`). One dedicated
  connection per replica `LISTEN`s and relays other replicas' notifications to
  the local `Notifier`; if it drops, it reconnects and wakes every local
  waiter (a notification may have been missed meanwhile).
- The sweep's updates skip rows other transactions hold (`SKIP LOCKED`), so
  several replicas sweeping at once split the work and never deadlock.

Tables live in the first schema of the connection's `search_path` (created if
missing), so `?options=-csearch_path%3Dcuemsg` in the URL gives cuemsg its own
schema; table names carry a `cuemsg_` prefix in case that schema is shared.
The schema is versioned (`cuemsg_meta.schema_version`) and migrated at `open()`
in one transaction under an advisory lock, so replicas starting together do
not race and a later release migrates without losing rows.

Two parameters of the URL are cuemsg's, not libpq's, and are taken out of it
before connecting: `pool_min_size` and `pool_max_size` (the connection pool of
this process; the LISTEN connection comes on top).

Times are UNIX seconds (double precision) computed by the app: replicas on
different hosts need synchronised clocks (NTP), as leases depend on them.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import re
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.adapt import Buffer, Loader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cuemsg._exceptions import StorageError
from cuemsg.server.errors import ApiProblem, cue_not_found, execution_not_found
from cuemsg.server.notify import Notifier
from cuemsg.server.storage.base import (
    EXECUTION_COLUMNS,
    IDEMPOTENCY_TTL,
    CueRow,
    ExecutionRow,
    NewFire,
    OutcomeRecord,
    WorkerRow,
    check_lease,
    effective_payload,
    execution_from_row,
    idempotency_conflict,
    name_taken,
    new_execution_id,
    outcome_already_recorded,
    routing_keys,
    where_equal,
)

log = logging.getLogger("cuemsg.server.postgres")

# -- schema --------------------------------------------------------------------

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
)
SCHEMA_VERSION = len(_MIGRATIONS)

_EXEC_COLS = EXECUTION_COLUMNS
_CLAIMABLE = "status IN ('pending', 'retry_ready') AND transport = 'worker' AND scheduled_for <= %s"
_CLAIM_SET = (
    "status = 'delivering', attempts = e.attempts + 1, claimed_by_worker = %s, "
    "claimed_at = %s, lease_expires_at = %s, updated_at = %s"
)
# Claims, heartbeats and the sweep commit without waiting for the WAL flush
# (`synchronous_commit = off` for that one statement's transaction). Safe by
# design: if the database crashes before the flush, a claim or a lease extension
# is lost and the message is simply delivered again (at-least-once), and the
# sweep redoes what it lost on its next pass. Fires and outcomes always wait for
# the flush: once acknowledged, they survive a crash.
_RELAXED = "relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS v)"
_IS_RELAXED = "(SELECT v FROM relaxed) = 'off'"  # referencing the CTE makes it run
#: NOTIFY payloads must stay under 8000 bytes; longer tasks wake the whole tenant.
_NOTIFY_MAX = 7000
_LONG_TASK = 1000
#: How long the listener waits for a notification before checking its connection.
_LISTEN_CHECK = 30.0

_encode = msgspec.json.Encoder().encode
_decode_cue = msgspec.json.Decoder(CueRow).decode
_decode_handlers = msgspec.json.Decoder(list[str]).decode


class _Wake(msgspec.Struct, array_like=True):
    tenant: str
    task: str | None
    n: int = 1  # how many executions: wakes that many waiters


class _Relay(msgspec.Struct):
    """A NOTIFY payload: which replica sent it, and the (tenant, task) pairs to wake."""

    r: str
    w: list[_Wake]


_decode_relay = msgspec.json.Decoder(_Relay).decode


class _RawJson(Loader):
    """Load json/jsonb columns as their raw text: msgspec decodes them, typed and fast."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


def _cue(doc: bytes, fired_count: int, last_run: float | None) -> CueRow:
    # The fire counters live in their own columns (a fire bumps them without
    # rewriting the document); the document holds everything else.
    cue = _decode_cue(doc)
    cue.fired_count = fired_count
    cue.last_run = last_run
    return cue


def _filters(
    tenant_id: str, task: str | None, agent: str | None, now: float
) -> tuple[str, list[Any]]:
    equal, args = where_equal("%s", tenant_id=tenant_id, task=task, agent=agent)
    return f"{equal} AND {_CLAIMABLE}", [*args, now]


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


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the cuemsg tables in `schema` (a valid identifier)."""
    if re.fullmatch(r"[a-z0-9_]{1,48}", schema):
        return f"cuemsg_{schema}"
    return "cuemsg_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def _relay_payloads(replica: str, pairs: Iterable[tuple[str, str | None, int]]) -> list[str]:
    """NOTIFY payloads for these wake-ups, each under PostgreSQL's 8000-byte limit."""
    payloads: list[str] = []
    batch: list[_Wake] = []
    size = 0
    for tenant, task, count in pairs:
        if task is not None and len(task) > _LONG_TASK:
            task, count = None, 1 << 30  # too long to carry: wake every waiter of the tenant
        item = _Wake(tenant, task, count)
        item_size = len(_encode(item)) + 1
        if batch and size + item_size > _NOTIFY_MAX:
            payloads.append(_encode(_Relay(replica, batch)).decode())
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        payloads.append(_encode(_Relay(replica, batch)).decode())
    return payloads


_POOL_PARAMS = ("pool_min_size", "pool_max_size")


def split_pool_params(url: str) -> tuple[str, dict[str, int]]:
    """Take cuemsg's own `pool_min_size` / `pool_max_size` out of a URL's query."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    if not any(k in _POOL_PARAMS for k, _ in pairs):
        return url, {}
    ours: dict[str, int] = {}
    for k, v in pairs:
        if k in _POOL_PARAMS:
            try:
                ours[k] = int(v)
            except ValueError:
                raise ValueError(f"{k} in the database URL must be an integer, not {v!r}") from None
    rest = urlencode([(k, v) for k, v in pairs if k not in _POOL_PARAMS], quote_via=quote)
    return urlunsplit(parts._replace(query=rest)), ours


def _storage_error(exc: BaseException) -> StorageError:
    error = StorageError(f"PostgreSQL: {type(exc).__name__}: {exc}".strip())
    error.__cause__ = exc
    return error


class PostgresStorage:
    """The backend for several replicas: `url` is a `postgresql://` URL (libpq syntax).

    Args:
        url: where to connect; `?options=-csearch_path%3D<schema>` picks the schema,
            `pool_min_size=` / `pool_max_size=` override the two below.
        min_size: connections the pool keeps open.
        max_size: most connections the pool opens (plus one for LISTEN).
        open_timeout: seconds `open()` waits for the database before giving up.
    """

    def __init__(
        self, url: str, *, min_size: int = 1, max_size: int = 10, open_timeout: float = 10.0
    ) -> None:
        url, pool = split_pool_params(url)
        min_size = pool.get("pool_min_size", min_size)
        max_size = pool.get("pool_max_size", max(max_size, min_size))
        if min_size < 1 or max_size < min_size:
            raise ValueError(f"need 1 <= min_size <= max_size, not {min_size}, {max_size}")
        self.url = url
        self.min_size = min_size
        self.max_size = max_size
        self.open_timeout = open_timeout
        self.notifier = Notifier()
        #: This process's name in NOTIFY payloads (it ignores its own).
        self.replica_id = secrets.token_hex(6)
        self.schema: str | None = None
        self.channel: str | None = None
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            # Notice a dead peer (the listener holds its connection for ever).
            "keepalives": 1,
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
        }
        if "connect_timeout" not in url:
            self._kwargs["connect_timeout"] = max(1, int(open_timeout))
        self._pool: AsyncConnectionPool | None = None
        self._listener: asyncio.Task[None] | None = None
        self._listen_conn: AsyncConnection[Any] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def open(self) -> None:
        if self._pool is not None:
            return
        try:
            conn = await AsyncConnection.connect(self.url, **self._kwargs)
        except psycopg.Error as exc:
            raise _storage_error(exc) from exc
        try:
            await self._migrate(conn)
            await self._configure(conn)
            assert self.channel is not None
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException as exc:
            await conn.close()
            if isinstance(exc, psycopg.Error):
                raise _storage_error(exc) from exc
            raise
        self._listen_conn = conn
        pool: AsyncConnectionPool = AsyncConnectionPool(
            self.url,
            min_size=self.min_size,
            max_size=self.max_size,
            kwargs=self._kwargs,
            configure=self._configure,
            open=False,
            name=f"cuemsg-{self.replica_id}",
        )
        try:
            await pool.open(wait=True, timeout=self.open_timeout)
        except (PoolTimeout, psycopg.Error) as exc:
            await pool.close()
            await conn.close()
            self._listen_conn = None
            raise _storage_error(exc) from exc
        self._pool = pool
        self._listener = asyncio.create_task(self._listen_forever(), name="cuemsg-listen")

    async def close(self) -> None:
        self.notifier.close()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._listen_conn is not None:
            with contextlib.suppress(Exception):
                await self._listen_conn.close()
            self._listen_conn = None
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    @staticmethod
    async def _configure(conn: AsyncConnection[Any]) -> None:
        conn.adapters.register_loader("jsonb", _RawJson)
        conn.adapters.register_loader("json", _RawJson)

    async def _migrate(self, conn: AsyncConnection[Any]) -> None:
        """Create the schema if need be and apply the migrations it lacks, atomically."""
        async with conn.transaction():
            row = await (await conn.execute("SHOW search_path")).fetchone()
            user = await (await conn.execute("SELECT current_user")).fetchone()
            assert row is not None and user is not None
            schema = None
            for entry in parse_search_path(row[0]):
                if entry == "$user":
                    if await self._schema_exists(conn, user[0]):
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
            if not await self._schema_exists(conn, schema):
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
        self.schema = schema
        self.channel = channel_name(schema)

    @staticmethod
    async def _schema_exists(conn: AsyncConnection[Any], schema: str) -> bool:
        cur = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (schema,))
        return await cur.fetchone() is not None

    @property
    def pool(self) -> AsyncConnectionPool:
        if self._pool is None:
            raise RuntimeError("storage is not open")
        return self._pool

    @contextlib.asynccontextmanager
    async def _conn(self) -> AsyncIterator[AsyncConnection[Any]]:
        """A pooled connection; database failures come out as `StorageError`."""
        try:
            async with self.pool.connection() as conn:
                yield conn
        except psycopg.DataError as exc:
            # e.g. a NUL character, which PostgreSQL text and jsonb cannot hold.
            raise ApiProblem(422, "validation_error", f"value not storable: {exc}") from exc
        except (psycopg.Error, PoolTimeout) as exc:
            raise _storage_error(exc) from exc

    @contextlib.asynccontextmanager
    async def _tx(self) -> AsyncIterator[AsyncConnection[Any]]:
        async with self._conn() as conn, conn.transaction():
            yield conn

    async def _one(self, query: str, args: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        async with self._conn() as conn:
            cur = await conn.execute(query, args)
            return await cur.fetchone()

    async def _all(self, query: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        async with self._conn() as conn:
            cur = await conn.execute(query, args)
            return await cur.fetchall()

    # -- wake-ups across replicas ------------------------------------------------

    def _payloads(self, pairs: Iterable[tuple[str, str | None, int]]) -> list[str]:
        return _relay_payloads(self.replica_id, pairs)

    async def _publish(
        self, conn: AsyncConnection[Any], pairs: Iterable[tuple[str, str | None, int]]
    ) -> None:
        """NOTIFY the other replicas (inside a transaction: delivered at its commit)."""
        for payload in self._payloads(pairs):
            await conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    async def _listen_forever(self) -> None:
        """Relay other replicas' NOTIFYs to local waiters; reconnect when the link drops."""
        conn = self._listen_conn
        backoff = 0.1
        while True:
            try:
                if conn is None:
                    conn = await AsyncConnection.connect(self.url, **self._kwargs)
                    assert self.channel is not None
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
                    self._listen_conn = conn
                    log.warning("LISTEN connection re-established")
                    # Whatever was notified while we were away is lost: let every
                    # local waiter look again.
                    self.notifier.wake_all()
                    backoff = 0.1
                async for note in conn.notifies(timeout=_LISTEN_CHECK):
                    self._relay(note.payload)
                await conn.execute("SELECT 1")  # quiet for a while: is the link alive?
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("LISTEN connection lost (%s); reconnecting in %.1fs", exc, backoff)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await conn.close()
                conn = self._listen_conn = None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)

    def _relay(self, payload: str) -> None:
        try:
            relay = _decode_relay(payload)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed notification: %.200r", payload)
            return
        if relay.r == self.replica_id:
            return  # our own: local waiters were woken at commit
        for wake in relay.w:
            self.notifier.notify(wake.tenant, wake.task, wake.n)

    # -- meta ------------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM cuemsg_meta WHERE key = %s", (key,))
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._one(
            "INSERT INTO cuemsg_meta (key, value) VALUES (%s, %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value RETURNING 1",
            (key, value),
        )

    # -- tenants ---------------------------------------------------------------

    async def create_tenant(self, tenant_id: str, email: str, key_hash: str, now: float) -> None:
        # One statement, so one implicit transaction: both rows or neither.
        await self._one(
            "WITH t AS (INSERT INTO cuemsg_tenants (id, email, created_at) "
            "VALUES (%s, %s, %s) RETURNING id) "
            "INSERT INTO cuemsg_api_keys (key_hash, tenant_id, created_at) "
            "SELECT %s, id, %s FROM t RETURNING 1",
            (tenant_id, email, now, key_hash, now),
        )

    async def tenant_for_key(self, key_hash: str) -> str | None:
        row = await self._one(
            "SELECT tenant_id FROM cuemsg_api_keys WHERE key_hash = %s", (key_hash,)
        )
        return row[0] if row else None

    # -- cues ------------------------------------------------------------------

    async def create_cue(self, cue: CueRow) -> CueRow:
        try:
            await self._one(
                "INSERT INTO cuemsg_cues "
                "(id, tenant_id, name, status, created_at, fired_count, last_run, doc) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s) RETURNING 1",
                (
                    cue.id,
                    cue.tenant_id,
                    cue.name,
                    cue.status,
                    cue.created_at,
                    cue.fired_count,
                    cue.last_run,
                    _encode(cue).decode(),
                ),
            )
        except StorageError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise name_taken(cue.name) from exc
            raise
        return cue

    async def get_cue(self, tenant_id: str, cue_id: str) -> CueRow | None:
        row = await self._one(
            "SELECT doc, fired_count, last_run FROM cuemsg_cues WHERE id = %s AND tenant_id = %s",
            (cue_id, tenant_id),
        )
        return _cue(*row) if row else None

    async def list_cues(
        self, tenant_id: str, *, status: str | None, limit: int, offset: int
    ) -> tuple[list[CueRow], int]:
        where, args = where_equal("%s", tenant_id=tenant_id, status=status)
        async with self._conn() as conn:
            cur = await conn.execute(f"SELECT count(*) FROM cuemsg_cues WHERE {where}", args)
            total = await cur.fetchone()
            cur = await conn.execute(
                f"SELECT doc, fired_count, last_run FROM cuemsg_cues WHERE {where} "
                "ORDER BY created_at, id LIMIT %s OFFSET %s",
                [*args, limit, offset],
            )
            rows = await cur.fetchall()
        assert total is not None
        return [_cue(*r) for r in rows], int(total[0])

    async def update_cue(
        self, tenant_id: str, cue_id: str, changes: dict[str, Any], now: float
    ) -> CueRow | None:
        try:
            async with self._tx() as conn:
                cur = await conn.execute(
                    "SELECT doc, fired_count, last_run FROM cuemsg_cues "
                    "WHERE id = %s AND tenant_id = %s FOR UPDATE",
                    (cue_id, tenant_id),
                )
                row = await cur.fetchone()
                if row is None:
                    return None
                cue = msgspec.structs.replace(_cue(*row), **changes, updated_at=now)
                await conn.execute(
                    "UPDATE cuemsg_cues SET name = %s, status = %s, doc = %s WHERE id = %s",
                    (cue.name, cue.status, _encode(cue).decode(), cue_id),
                )
        except StorageError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise name_taken(str(changes.get("name"))) from exc
            raise
        return cue

    async def delete_cue(self, tenant_id: str, cue_id: str) -> bool:
        async with self._tx() as conn:
            cur = await conn.execute(
                "DELETE FROM cuemsg_cues WHERE id = %s AND tenant_id = %s", (cue_id, tenant_id)
            )
            deleted = cur.rowcount > 0
            await conn.execute(
                "DELETE FROM cuemsg_idempotency WHERE tenant_id = %s AND cue_id = %s",
                (tenant_id, cue_id),
            )
        return deleted

    # -- fire ------------------------------------------------------------------

    async def fire(self, tenant_id: str, fires: list[NewFire], now: float) -> list[ExecutionRow]:
        if len(fires) == 1:
            done = await self._fire_one(tenant_id, fires[0], now)
            if done is not None:
                return [done]
        return await self._fire_many(tenant_id, fires, now)

    async def _fire_one(self, tenant_id: str, fire: NewFire, now: float) -> ExecutionRow | None:
        """One fire in two statements, no transaction: the common case made cheap.

        None hands over to `_fire_many` (the general path) for the rare cases:
        a repeated key whose execution is gone, or a key fired concurrently
        between our two statements.
        """
        key = fire.idempotency_key
        async with self._conn() as conn:
            cur = await conn.execute(
                "SELECT c.doc, c.fired_count, c.last_run, i.body_hash, i.execution_id "
                "FROM cuemsg_cues c LEFT JOIN cuemsg_idempotency i ON i.tenant_id = c.tenant_id "
                "AND i.cue_id = c.id AND i.key = %s AND i.created_at > %s "
                "WHERE c.id = %s AND c.tenant_id = %s",
                (key, now - IDEMPOTENCY_TTL, fire.cue_id, tenant_id),
            )
            row = await cur.fetchone()
            if row is None:
                raise cue_not_found(fire.cue_id)
            if row[3] is not None:  # a live key: a repeat (or a conflict)
                assert key is not None
                if row[3] != (fire.body_hash or ""):
                    raise idempotency_conflict(key, 0, 1)
                cur = await conn.execute(
                    f"SELECT {_EXEC_COLS} FROM cuemsg_executions WHERE id = %s", (row[4],)
                )
                first = await cur.fetchone()
                return execution_from_row(first) if first is not None else None
            cue = _cue(row[0], row[1], row[2])
            execution = self._newexecution_from_row(tenant_id, cue, fire, new_execution_id(), now)
            wake = execution.scheduled_for <= now and execution.transport == "worker"
            # One statement is one transaction: the key, the execution, the cue's
            # counters and the NOTIFY (sent at commit) all happen, or none does.
            # If another fire took the key since our SELECT, nothing is inserted.
            cur = await conn.execute(
                "WITH idem AS ("
                "INSERT INTO cuemsg_idempotency AS i "
                "(tenant_id, cue_id, key, body_hash, execution_id, created_at) "
                "SELECT %(t)s, %(cue)s, %(key)s::text, %(hash)s, %(id)s, %(now)s "
                "WHERE %(key)s::text IS NOT NULL "
                "ON CONFLICT (tenant_id, cue_id, key) DO UPDATE SET "
                "body_hash = excluded.body_hash, execution_id = excluded.execution_id, "
                "created_at = excluded.created_at WHERE i.created_at <= %(expired)s "
                "RETURNING 1), "
                "ins AS ("
                "INSERT INTO cuemsg_executions (id, tenant_id, cue_id, status, task, agent, "
                "payload, transport, triggered_by, scheduled_for, created_at, updated_at, "
                "attempts, max_attempts) "
                "SELECT %(id)s, %(t)s, %(cue)s, 'pending', %(task)s, %(agent)s, "
                "%(payload)s::jsonb, %(transport)s, 'manual_fire', %(at)s, %(now)s, %(now)s, "
                "0, %(max)s WHERE %(key)s::text IS NULL OR EXISTS (SELECT 1 FROM idem) "
                "RETURNING cue_id), "
                "upd AS (UPDATE cuemsg_cues SET fired_count = fired_count + 1, "
                "last_run = %(now)s WHERE id IN (SELECT cue_id FROM ins) RETURNING 1) "
                "SELECT (SELECT count(*) FROM ins), (SELECT count(*) FROM upd), "
                "(SELECT count(*) FROM (SELECT pg_notify(%(channel)s, %(note)s) FROM ins "
                "WHERE %(wake)s) AS n)",
                {
                    "t": tenant_id,
                    "cue": cue.id,
                    "key": key,
                    "hash": fire.body_hash or "",
                    "id": execution.id,
                    "now": now,
                    "expired": now - IDEMPOTENCY_TTL,
                    "task": execution.task,
                    "agent": execution.agent,
                    "payload": _encode(execution.payload).decode(),
                    "transport": execution.transport,
                    "at": execution.scheduled_for,
                    "max": execution.max_attempts,
                    "channel": self.channel,
                    "note": self._payloads([(tenant_id, execution.task, 1)])[0],
                    "wake": wake,
                },
            )
            counts = await cur.fetchone()
        if counts is None or counts[0] == 0:
            return None  # lost a race for the key: the general path sorts it out
        if wake:
            self.notifier.notify(tenant_id, execution.task)
        return execution

    async def _fire_many(
        self, tenant_id: str, fires: list[NewFire], now: float
    ) -> list[ExecutionRow]:
        """Any number of fires in one transaction (all or none)."""
        cue_ids = list(dict.fromkeys(f.cue_id for f in fires))
        async with self._conn() as conn, conn.transaction():
            cur = await conn.execute(
                "SELECT doc, fired_count, last_run FROM cuemsg_cues "
                "WHERE tenant_id = %s AND id = ANY(%s)",
                (tenant_id, cue_ids),
            )
            cues = {cue.id: cue for cue in (_cue(*r) for r in await cur.fetchall())}
            # Fires before the first unknown cue are still checked in order, so a
            # conflict earlier in a batch wins over a 404 later in it (as in SQLite).
            missing = next((i for i, f in enumerate(fires) if f.cue_id not in cues), len(fires))
            valid = fires[:missing]

            ids = [new_execution_id() for _ in valid]
            # Claim each idempotency key once (its first use in the batch leads).
            leaders: dict[tuple[str, str], int] = {}
            for i, f in enumerate(valid):
                if f.idempotency_key is not None:
                    leaders.setdefault((f.cue_id, f.idempotency_key), i)
            stored: dict[tuple[str, str], tuple[str, str]] = {}  # key -> (body_hash, exec id)
            owned: set[tuple[str, str]] = set()
            if leaders:
                order = sorted(leaders)  # a fixed lock order: concurrent batches never deadlock
                cur = await conn.execute(
                    "INSERT INTO cuemsg_idempotency AS i "
                    "(tenant_id, cue_id, key, body_hash, execution_id, created_at) "
                    "SELECT %s, u.cue_id, u.key, u.body_hash, u.execution_id, %s "
                    "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[]) "
                    "AS u(cue_id, key, body_hash, execution_id) "
                    # An expired key is taken over; a live one is left as it is.
                    "ON CONFLICT (tenant_id, cue_id, key) DO UPDATE SET "
                    "body_hash = excluded.body_hash, execution_id = excluded.execution_id, "
                    "created_at = excluded.created_at WHERE i.created_at <= %s "
                    "RETURNING cue_id, key",
                    (
                        tenant_id,
                        now,
                        [k[0] for k in order],
                        [k[1] for k in order],
                        [valid[leaders[k]].body_hash or "" for k in order],
                        [ids[leaders[k]] for k in order],
                        now - IDEMPOTENCY_TTL,
                    ),
                )
                owned = {(r[0], r[1]) for r in await cur.fetchall()}
                seen = [k for k in order if k not in owned]
                if seen:
                    cur = await conn.execute(
                        "SELECT cue_id, key, body_hash, execution_id FROM cuemsg_idempotency "
                        "WHERE tenant_id = %s AND (cue_id, key) IN "
                        "(SELECT * FROM unnest(%s::text[], %s::text[]))",
                        (tenant_id, [k[0] for k in seen], [k[1] for k in seen]),
                    )
                    stored = {(r[0], r[1]): (r[2], r[3]) for r in await cur.fetchall()}
                for k in owned:
                    stored[k] = (valid[leaders[k]].body_hash or "", ids[leaders[k]])

            earlier: dict[str, ExecutionRow] = {}
            wanted = [v[1] for k, v in stored.items() if k not in owned]
            if wanted:
                cur = await conn.execute(
                    f"SELECT {_EXEC_COLS} FROM cuemsg_executions WHERE id = ANY(%s)",
                    (wanted,),
                )
                earlier = {r[0]: execution_from_row(r) for r in await cur.fetchall()}

            out: list[ExecutionRow] = []
            created: list[ExecutionRow] = []
            for i, f in enumerate(valid):
                key = (f.cue_id, f.idempotency_key) if f.idempotency_key is not None else None
                if key is not None and key in stored:
                    body_hash, first_id = stored[key]
                    if body_hash != (f.body_hash or ""):
                        assert f.idempotency_key is not None
                        raise idempotency_conflict(f.idempotency_key, i, len(fires))
                    # A repeat within this batch finds the execution its leader made.
                    first = earlier.get(first_id)
                    if first is not None:
                        out.append(first)
                        continue
                execution = self._newexecution_from_row(tenant_id, cues[f.cue_id], f, ids[i], now)
                if key is not None and key not in owned:
                    # The key's first execution is gone: this fire takes its place.
                    await conn.execute(
                        "INSERT INTO cuemsg_idempotency "
                        "(tenant_id, cue_id, key, body_hash, execution_id, created_at) "
                        "VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (tenant_id, cue_id, key) "
                        "DO UPDATE SET body_hash = excluded.body_hash, "
                        "execution_id = excluded.execution_id, created_at = excluded.created_at",
                        (tenant_id, key[0], key[1], f.body_hash or "", execution.id, now),
                    )
                    owned.add(key)
                    stored[key] = (f.body_hash or "", execution.id)
                earlier[execution.id] = execution
                out.append(execution)
                created.append(execution)
            if missing < len(fires):
                problem = cue_not_found(fires[missing].cue_id)
                if len(fires) > 1:
                    problem.field = f"fires[{missing}].cue_id"
                raise problem

            if created:
                await self._insert(conn, tenant_id, created, now)
                counts: dict[str, int] = {}
                for e in created:
                    counts[e.cue_id] = counts.get(e.cue_id, 0) + 1
                for cue_id in sorted(counts):  # a fixed lock order again
                    await conn.execute(
                        "UPDATE cuemsg_cues SET fired_count = fired_count + %s, last_run = %s "
                        "WHERE id = %s",
                        (counts[cue_id], now, cue_id),
                    )
                    cues[cue_id].fired_count += counts[cue_id]
                    cues[cue_id].last_run = now
            wake = [
                (tenant_id, task, count)
                for task, count in Counter(
                    e.task for e in created if e.scheduled_for <= now and e.transport == "worker"
                ).items()
            ]
            if wake:
                await self._publish(conn, wake)
        for tenant, task, count in wake:
            self.notifier.notify(tenant, task, count)
        return out

    @staticmethod
    def _newexecution_from_row(
        tenant_id: str, cue: CueRow, fire: NewFire, execution_id: str, now: float
    ) -> ExecutionRow:
        payload = effective_payload(cue.payload, fire)
        task, agent = routing_keys(payload)
        return ExecutionRow(
            id=execution_id,
            tenant_id=tenant_id,
            cue_id=cue.id,
            status="pending",
            payload=payload,
            task=task,
            agent=agent,
            transport=cue.transport,
            scheduled_for=max(fire.scheduled_for, now),
            created_at=now,
            updated_at=now,
            max_attempts=cue.max_attempts,
        )

    @staticmethod
    async def _insert(
        conn: AsyncConnection[Any], tenant_id: str, created: list[ExecutionRow], now: float
    ) -> None:
        # One statement for the whole batch; WITH ORDINALITY + ORDER BY keeps
        # `seq` (the tie-break of the claim order) in fire order.
        await conn.execute(
            "INSERT INTO cuemsg_executions (id, tenant_id, cue_id, status, task, agent, payload, "
            "transport, triggered_by, scheduled_for, created_at, updated_at, attempts, "
            "max_attempts) "
            "SELECT u.id, %s, u.cue_id, 'pending', u.task, u.agent, u.payload::jsonb, "
            "u.transport, 'manual_fire', u.scheduled_for, %s, %s, 0, u.max_attempts "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], "
            "%s::text[], %s::float8[], %s::int[]) WITH ORDINALITY "
            "AS u(id, cue_id, task, agent, payload, transport, scheduled_for, max_attempts, n) "
            "ORDER BY u.n",
            (
                tenant_id,
                now,
                now,
                [e.id for e in created],
                [e.cue_id for e in created],
                [e.task for e in created],
                [e.agent for e in created],
                [_encode(e.payload).decode() for e in created],
                [e.transport for e in created],
                [e.scheduled_for for e in created],
                [e.max_attempts for e in created],
            ),
        )

    # -- executions ------------------------------------------------------------

    async def get_execution(self, tenant_id: str, execution_id: str) -> ExecutionRow | None:
        row = await self._one(
            f"SELECT {_EXEC_COLS} FROM cuemsg_executions WHERE id = %s AND tenant_id = %s",
            (execution_id, tenant_id),
        )
        return execution_from_row(row) if row else None

    async def list_executions(
        self,
        tenant_id: str,
        *,
        cue_id: str | None,
        status: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[ExecutionRow], int]:
        clause, args = where_equal("%s", tenant_id=tenant_id, cue_id=cue_id, status=status)
        async with self._conn() as conn:
            cur = await conn.execute(f"SELECT count(*) FROM cuemsg_executions WHERE {clause}", args)
            total = await cur.fetchone()
            cur = await conn.execute(
                f"SELECT {_EXEC_COLS} FROM cuemsg_executions WHERE {clause} "
                "ORDER BY seq DESC LIMIT %s OFFSET %s",
                [*args, limit, offset],
            )
            rows = await cur.fetchall()
        assert total is not None
        return [execution_from_row(r) for r in rows], int(total[0])

    async def list_claimable(
        self, tenant_id: str, *, task: str | None, agent: str | None, now: float, limit: int
    ) -> list[ExecutionRow]:
        where, args = _filters(tenant_id, task, agent, now)
        rows = await self._all(
            f"SELECT e.*, c.name FROM (SELECT {_EXEC_COLS}, seq FROM cuemsg_executions "
            f"WHERE {where} ORDER BY scheduled_for, seq LIMIT %s) e "
            "LEFT JOIN cuemsg_cues c ON c.id = e.cue_id ORDER BY e.scheduled_for, e.seq",
            [*args, limit],
        )
        return [execution_from_row(r, r[-1]) for r in rows]

    async def claim(
        self, tenant_id: str, execution_id: str, worker_id: str, now: float, lease_seconds: float
    ) -> ExecutionRow:
        # One conditional UPDATE: a racing claim waits for the row lock, then
        # re-checks the condition against the winner's commit and matches nothing.
        async with self._conn() as conn:
            cur = await conn.execute(
                f"WITH {_RELAXED} UPDATE cuemsg_executions e SET {_CLAIM_SET} "
                f"WHERE id = %s AND tenant_id = %s AND {_CLAIMABLE} AND {_IS_RELAXED} "
                f"RETURNING {_EXEC_COLS}",
                (worker_id, now, now + lease_seconds, now, execution_id, tenant_id, now),
            )
            row = await cur.fetchone()
            if row is None:
                cur = await conn.execute(
                    "SELECT 1 FROM cuemsg_executions WHERE id = %s AND tenant_id = %s",
                    (execution_id, tenant_id),
                )
                if await cur.fetchone() is None:
                    raise execution_not_found(execution_id)
                raise ApiProblem(
                    409, "claim_failed", f"execution {execution_id!r} is not claimable"
                )
        return execution_from_row(row)

    async def claim_next(
        self,
        tenant_id: str,
        worker_id: str,
        *,
        task: str | None,
        agent: str | None,
        now: float,
        lease_seconds: float,
        limit: int,
    ) -> list[ExecutionRow]:
        where, args = _filters(tenant_id, task, agent, now)
        # The CTE (always materialised: it locks) runs once; SKIP LOCKED lets
        # concurrent claimers on any replica take different rows without waiting.
        rows = await self._all(
            f"WITH {_RELAXED}, picked AS (SELECT seq FROM cuemsg_executions WHERE {where} "
            "ORDER BY scheduled_for, seq LIMIT %s FOR UPDATE SKIP LOCKED) "
            f"UPDATE cuemsg_executions e SET {_CLAIM_SET} FROM picked "
            f"WHERE e.seq = picked.seq AND {_IS_RELAXED} RETURNING {_EXEC_COLS}, e.seq",
            [*args, limit, worker_id, now, now + lease_seconds, now],
        )
        # RETURNING gives no order guarantee: restore oldest-first.
        rows.sort(key=lambda r: (r[9], r[-1]))
        return [execution_from_row(r) for r in rows]

    async def _locked(
        self, conn: AsyncConnection[Any], tenant_id: str, execution_id: str
    ) -> tuple[str, str | None, bool]:
        cur = await conn.execute(
            "SELECT status, claimed_by_worker, outcome IS NOT NULL FROM cuemsg_executions "
            "WHERE id = %s AND tenant_id = %s FOR UPDATE",
            (execution_id, tenant_id),
        )
        row = await cur.fetchone()
        if row is None:
            raise execution_not_found(execution_id)
        return row[0], row[1], bool(row[2])

    async def heartbeat(
        self,
        tenant_id: str,
        execution_id: str,
        worker_id: str | None,
        now: float,
        lease_seconds: float,
    ) -> ExecutionRow:
        update = (
            f"WITH {_RELAXED} UPDATE cuemsg_executions SET lease_expires_at = %s, "
            "updated_at = %s WHERE id = %s AND tenant_id = %s AND status = 'delivering' "
            f"AND {_IS_RELAXED} {{}} "
            f"RETURNING {_EXEC_COLS}"
        )
        args: list[Any] = [now + lease_seconds, now, execution_id, tenant_id]
        owner = "" if worker_id is None else "AND claimed_by_worker = %s"
        if worker_id is not None:
            args.append(worker_id)
        # Happy path: the checks are the UPDATE's own condition (atomic under its row lock).
        row = await self._one(update.format(owner), args)
        if row is None:
            # Something is wrong: find out what under a row lock, and answer exactly.
            async with self._tx() as conn:
                status, holder, _ = await self._locked(conn, tenant_id, execution_id)
                check_lease(execution_id, status, holder, worker_id)
                cur = await conn.execute(update.format(""), args[:4])
                row = await cur.fetchone()
        assert row is not None
        return execution_from_row(row)

    async def record_outcome(
        self, tenant_id: str, execution_id: str, worker_id: str | None, outcome: OutcomeRecord
    ) -> ExecutionRow:
        update = (
            "UPDATE cuemsg_executions SET status = %s, outcome = %s, updated_at = %s, "
            "lease_expires_at = NULL WHERE id = %s AND tenant_id = %s {} "
            f"RETURNING {_EXEC_COLS}"
        )
        args: list[Any] = [
            "success" if outcome.success else "failed",
            _encode(outcome).decode(),
            outcome.recorded_at,
            execution_id,
            tenant_id,
        ]
        guard = "AND status = 'delivering' AND outcome IS NULL"
        if worker_id is not None:
            guard += " AND claimed_by_worker = %s"
        row = await self._one(
            update.format(guard), [*args, worker_id] if worker_id is not None else args
        )
        if row is None:
            async with self._tx() as conn:
                status, holder, recorded = await self._locked(conn, tenant_id, execution_id)
                if recorded:
                    raise outcome_already_recorded(execution_id)
                check_lease(execution_id, status, holder, worker_id)
                cur = await conn.execute(update.format(""), args)
                row = await cur.fetchone()
        assert row is not None
        return execution_from_row(row)

    async def record_outcomes(
        self, tenant_id: str, items: list[tuple[str, OutcomeRecord]], worker_id: str | None
    ) -> list[ExecutionRow | ApiProblem]:
        results: dict[int, ExecutionRow | ApiProblem] = {}
        async with self._tx() as conn:  # one commit for the batch
            # Lock rows in id order so two batches over the same rows cannot deadlock.
            for index in sorted(range(len(items)), key=lambda i: items[i][0]):
                execution_id, outcome = items[index]
                try:
                    status, holder, recorded = await self._locked(conn, tenant_id, execution_id)
                    if recorded:
                        raise outcome_already_recorded(execution_id)
                    check_lease(execution_id, status, holder, worker_id)
                except ApiProblem as problem:
                    results[index] = problem
                    continue
                cur = await conn.execute(
                    "UPDATE cuemsg_executions SET status = %s, outcome = %s, updated_at = %s, "
                    f"lease_expires_at = NULL WHERE id = %s RETURNING {_EXEC_COLS}",
                    (
                        "success" if outcome.success else "failed",
                        _encode(outcome).decode(),
                        outcome.recorded_at,
                        execution_id,
                    ),
                )
                row = await cur.fetchone()
                assert row is not None
                results[index] = execution_from_row(row)
        return [results[i] for i in range(len(items))]

    # -- workers ---------------------------------------------------------------

    async def worker_heartbeat(
        self, tenant_id: str, worker_id: str, handlers: list[str], now: float
    ) -> None:
        await self._one(
            "INSERT INTO cuemsg_workers (tenant_id, worker_id, handlers, last_heartbeat) "
            "VALUES (%s, %s, %s, %s) ON CONFLICT (tenant_id, worker_id) DO UPDATE SET "
            "handlers = excluded.handlers, last_heartbeat = excluded.last_heartbeat RETURNING 1",
            (tenant_id, worker_id, _encode(handlers).decode(), now),
        )

    async def list_workers(self, tenant_id: str) -> list[WorkerRow]:
        rows = await self._all(
            "SELECT worker_id, handlers, last_heartbeat FROM cuemsg_workers "
            "WHERE tenant_id = %s ORDER BY last_heartbeat DESC",
            (tenant_id,),
        )
        return [
            WorkerRow(worker_id=r[0], handlers=_decode_handlers(r[1]), last_heartbeat=r[2])
            for r in rows
        ]

    # -- time ------------------------------------------------------------------

    async def sweep(self, now: float, *, since: float, unclaimed_timeout: float) -> None:
        # Each UPDATE takes only rows nobody else holds (SKIP LOCKED): replicas
        # sweeping at once split the work, never wait on each other, never deadlock;
        # a row skipped now (an outcome is being written) is looked at next pass.
        requeued: list[tuple[str, str | None, int]] = []
        async with self._conn() as conn:
            # Past the claim cap: a message that kills every receiver stops here.
            await conn.execute(
                f"WITH {_RELAXED}, gone AS (SELECT seq FROM cuemsg_executions "
                "WHERE status = 'delivering' "
                "AND lease_expires_at < %s AND attempts >= max_attempts "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE cuemsg_executions e SET status = 'failed', updated_at = %s, "
                "lease_expires_at = NULL, outcome = jsonb_build_object('success', false, "
                "'error', 'lease expired after ' || e.attempts || ' claims (claim cap reached)', "
                "'recorded_at', %s::float8) "
                f"FROM gone WHERE e.seq = gone.seq AND {_IS_RELAXED}",
                (now, now, now),
            )
            cur = await conn.execute(
                f"WITH {_RELAXED}, gone AS (SELECT seq FROM cuemsg_executions "
                "WHERE status = 'delivering' "
                "AND lease_expires_at < %s AND attempts < max_attempts "
                "FOR UPDATE SKIP LOCKED) "
                "UPDATE cuemsg_executions e SET status = 'pending', claimed_by_worker = NULL, "
                "claimed_at = NULL, lease_expires_at = NULL, updated_at = %s "
                f"FROM gone WHERE e.seq = gone.seq AND {_IS_RELAXED} RETURNING e.tenant_id, e.task",
                (now, now),
            )
            counts = Counter((r[0], r[1]) for r in await cur.fetchall())
            requeued = [(tenant, task, n) for (tenant, task), n in counts.items()]
            if requeued:
                # Waiters on other replicas want these too (committed already: autocommit).
                await self._publish(conn, requeued)
            if unclaimed_timeout > 0:
                await conn.execute(
                    f"WITH {_RELAXED}, late AS (SELECT seq FROM cuemsg_executions "
                    "WHERE status IN ('pending', 'retry_ready') AND attempts = 0 "
                    "AND scheduled_for < %s FOR UPDATE SKIP LOCKED) "
                    "UPDATE cuemsg_executions e SET status = 'missed', updated_at = %s "
                    f"FROM late WHERE e.seq = late.seq AND {_IS_RELAXED}",
                    (now - unclaimed_timeout, now),
                )
            # Scheduled work that came due: every replica sweeps, so each wakes
            # only its own waiters.
            cur = await conn.execute(
                "SELECT tenant_id, task, count(*) FROM cuemsg_executions "
                "WHERE status IN ('pending', 'retry_ready') AND scheduled_for > %s "
                "AND scheduled_for <= %s AND scheduled_for > created_at "
                "GROUP BY tenant_id, task",
                (since, now),
            )
            due = [(r[0], r[1], int(r[2])) for r in await cur.fetchall()]
            await conn.execute(
                "DELETE FROM cuemsg_idempotency WHERE (tenant_id, cue_id, key) IN "
                "(SELECT tenant_id, cue_id, key FROM cuemsg_idempotency WHERE created_at < %s "
                "LIMIT 10000 FOR UPDATE SKIP LOCKED)",
                (now - IDEMPOTENCY_TTL,),
            )
        for tenant_id, task, count in (*requeued, *due):
            self.notifier.notify(tenant_id, task, count)
