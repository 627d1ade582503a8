"""The PostgreSQL connection layer: the pool and the LISTEN connection, opening
(migrations first) and closing, statement helpers that turn database failures
into `StorageError`, and the listener relaying other replicas' NOTIFYs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import msgspec
import psycopg
from psycopg import AsyncConnection, sql
from psycopg.adapt import Buffer, Loader
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from cuemsg._exceptions import StorageError, StorageFull, StorageOpenError
from cuemsg.server.errors import ApiProblem
from cuemsg.server.notify import Notifier
from cuemsg.server.storage.postgres.relay import channel_name, decode_relay, relay_payloads
from cuemsg.server.storage.postgres.schema import migrate

log = logging.getLogger("cuemsg.server.postgres")


#: How long the listener waits for a notification before checking its connection.
_LISTEN_CHECK = 30.0


class _RawJson(Loader):
    """Load json/jsonb columns as their raw text: msgspec decodes them, typed and fast."""

    def load(self, data: Buffer) -> bytes:
        return bytes(data)


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


#: PostgreSQL's SQLSTATE for "disk full" (class 53, insufficient resources).
DISK_FULL = "53100"


def hide_password(url: str) -> str:
    """`url` with its password (if any) shown as `***`, fit for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _storage_error(exc: BaseException) -> StorageError:
    full = getattr(exc, "sqlstate", None) == DISK_FULL
    kind = StorageFull if full else StorageError
    error = kind(f"PostgreSQL: {type(exc).__name__}: {exc}".strip())
    error.__cause__ = exc
    return error


class PostgresConnection:
    """The pool, the LISTEN connection and the statement helpers of `PostgresStorage`."""

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
        """Connect, migrate and listen; `StorageOpenError` (one line, no password) if not."""
        try:
            await self._open()
        except StorageOpenError:
            raise
        except StorageError as exc:
            reason = " ".join(str(exc).split())  # psycopg's messages span lines
            raise StorageOpenError(hide_password(self.url), reason) from exc

    async def _open(self) -> None:
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
        """Bring the schema up to date and learn its name and channel."""
        schema = await migrate(conn)
        self.schema = schema
        self.channel = channel_name(schema)

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
        return relay_payloads(self.replica_id, pairs)

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
            relay = decode_relay(payload)
        except msgspec.DecodeError:
            log.warning("ignoring a malformed notification: %.200r", payload)
            return
        if relay.r == self.replica_id:
            return  # our own: local waiters were woken at commit
        for wake in relay.w:
            self.notifier.notify(wake.tenant, wake.task, wake.n)
