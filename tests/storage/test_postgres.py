"""What only the PostgreSQL backend does: schema and migrations, LISTEN/NOTIFY between
replicas (and its reconnection), concurrent sweeps, errors as StorageError."""

from __future__ import annotations

import asyncio
import os
import secrets
import time
from collections.abc import Callable, Iterator

import psycopg
import pytest

from cuemsg import StorageError
from cuemsg.server.errors import ApiProblem
from cuemsg.server.storage.base import OutcomeRecord
from cuemsg.server.storage.postgres import (
    SCHEMA_VERSION,
    PostgresStorage,
    channel_name,
    parse_search_path,
    split_pool_params,
)
from tests.conftest import PG_DSN
from tests.storage.helpers import T0, make_cue, new_fire, tenant

pytestmark = [pytest.mark.anyio, pytest.mark.postgres]


@pytest.fixture
def pg_url(postgres_url: Callable[[], str]) -> str:
    return postgres_url()


def _schema_of(url: str) -> str:
    return url.rsplit("%3D", 1)[1]


def test_search_path_parsing_and_channel_names() -> None:
    assert parse_search_path('"$user", public') == ["$user", "public"]
    assert parse_search_path('cuemsg_t_1, "My ""Odd"", Schema",Public') == [
        "cuemsg_t_1",
        'My "Odd", Schema',
        "public",
    ]
    assert channel_name("cuemsg_t_ab12") == "cuemsg_cuemsg_t_ab12"
    odd = channel_name('My "Odd" schema' * 9)
    assert odd.startswith("cuemsg_") and len(odd) < 63 and odd.isidentifier()


def test_pool_size_in_the_url_is_taken_out() -> None:
    url = "postgresql://h/db?options=-csearch_path%3Dx%20-cstatement_timeout%3D5s"
    assert split_pool_params(url) == (url, {})
    assert split_pool_params(url + "&pool_max_size=20&pool_min_size=2") == (
        url,
        {"pool_max_size": 20, "pool_min_size": 2},
    )
    store = PostgresStorage("postgresql://h/db?pool_max_size=3")
    assert (store.url, store.min_size, store.max_size) == ("postgresql://h/db", 1, 3)
    with pytest.raises(ValueError, match="pool_max_size"):
        PostgresStorage("postgresql://h/db?pool_max_size=many")


async def test_creates_its_schema_and_records_the_version(pg_url: str) -> None:
    schema = _schema_of(pg_url)
    store = PostgresStorage(pg_url)
    await store.open()
    assert store.schema == schema and store.channel == f"cuemsg_{schema}"
    await store.close()
    with psycopg.connect(PG_DSN) as conn:
        tables = {
            r[0]
            for r in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,)
            ).fetchall()
        }
        version = conn.execute(
            f'SELECT value FROM "{schema}".cuemsg_meta WHERE key = %s', ("schema_version",)
        ).fetchone()
    assert "cuemsg_executions" in tables and "cuemsg_meta" in tables
    assert version == (str(SCHEMA_VERSION),)


async def test_replicas_starting_together_migrate_once(pg_url: str) -> None:
    stores = [PostgresStorage(pg_url, max_size=2) for _ in range(6)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        t = await tenant(stores[0])
        cue = await make_cue(stores[1], t)
        [e] = await stores[2].fire(t, [new_fire(cue.id)], T0)
        assert (await stores[5].get_execution(t, e.id)) is not None
    finally:
        await asyncio.gather(*(s.close() for s in stores))


async def test_refuses_a_schema_newer_than_it_knows(pg_url: str) -> None:
    store = PostgresStorage(pg_url)
    await store.open()
    await store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    await store.close()
    with pytest.raises(StorageError, match="newer than this cuemsg"):
        await PostgresStorage(pg_url).open()


async def test_plain_url_uses_the_default_schema() -> None:
    database = f"cuemsg_plain_{secrets.token_hex(4)}"
    try:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'CREATE DATABASE "{database}"')
    except psycopg.Error as exc:
        why = f"cannot create a database here: {exc}"
        if os.environ.get("CUEMSG_REQUIRE_POSTGRES") == "1":  # CI: trust auth as a superuser
            pytest.fail(why)
        pytest.skip(why)
    url = PG_DSN.rsplit("/", 1)[0] + f"/{database}"
    try:
        store = PostgresStorage(url)
        await store.open()
        try:
            assert store.schema == "public" and store.channel == "cuemsg_public"
            t = await tenant(store)
            cue = await make_cue(store, t)
            await store.fire(t, [new_fire(cue.id)], T0)
        finally:
            await store.close()
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')


async def test_a_fire_on_one_replica_wakes_a_waiter_on_another(pg_url: str) -> None:
    a, b = PostgresStorage(pg_url), PostgresStorage(pg_url)
    await a.open()
    await b.open()
    try:
        t = await tenant(a)
        cue = await make_cue(a, t, "x")
        waiter, other_task = b.notifier.subscribe(t, "x"), b.notifier.subscribe(t, "y")
        try:
            started = time.monotonic()
            await a.fire(t, [new_fire(cue.id)], time.time())
            assert await waiter.wait(2)
            print(f"cross-replica wake-up in {(time.monotonic() - started) * 1000:.1f} ms")
            assert not await other_task.wait(0.1)
        finally:
            waiter.close()
            other_task.close()
        # A lease requeued by one replica's sweep wakes the other's waiters too.
        now = time.time()
        [claimed] = await b.claim_next(
            t, "w", task="x", agent=None, now=now, lease_seconds=1, limit=1
        )
        assert claimed.status == "delivering"
        waiter = b.notifier.subscribe(t, "x")
        try:
            await a.sweep(now + 2, since=now + 1, unclaimed_timeout=0)
            assert await waiter.wait(2)
        finally:
            waiter.close()
    finally:
        await a.close()
        await b.close()


async def test_schemas_do_not_cross_talk(postgres_url: Callable[[], str]) -> None:
    a, c = PostgresStorage(postgres_url()), PostgresStorage(postgres_url())
    await a.open()
    await c.open()
    try:
        assert a.channel != c.channel
        for s in (a, c):
            await s.create_tenant("ten_same", "x@example.com", secrets.token_hex(8), T0)
        cue = await make_cue(a, "ten_same", "x")
        waiter = c.notifier.subscribe("ten_same", "x")
        try:
            await a.fire("ten_same", [new_fire(cue.id)], time.time())
            assert not await waiter.wait(0.3)
        finally:
            waiter.close()
    finally:
        await a.close()
        await c.close()


def _terminate(pids: Iterator[int] | list[int]) -> None:
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        for pid in pids:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


async def test_listener_reconnects_and_wakes_everyone(pg_url: str) -> None:
    a, b = PostgresStorage(pg_url), PostgresStorage(pg_url)
    await a.open()
    await b.open()
    try:
        t = await tenant(a)
        cue = await make_cue(a, t, "x")
        assert b._listen_conn is not None
        old_pid = b._listen_conn.info.backend_pid
        parked = b.notifier.subscribe(t, "x")
        try:
            _terminate([old_pid])
            # Notifications may be lost while it is down: every local waiter looks again.
            assert await parked.wait(10)
        finally:
            parked.close()
        assert b._listen_conn is not None and b._listen_conn.info.backend_pid != old_pid
        waiter = b.notifier.subscribe(t, "x")
        try:
            await a.fire(t, [new_fire(cue.id)], time.time())
            assert await waiter.wait(2)
        finally:
            waiter.close()
    finally:
        await a.close()
        await b.close()


async def test_concurrent_sweeps_requeue_each_lease_once(pg_url: str) -> None:
    stores = [PostgresStorage(pg_url) for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        t = await tenant(stores[0])
        cue = await make_cue(stores[0], t, max_attempts=5)
        fired = await stores[0].fire(t, [new_fire(cue.id) for _ in range(300)], T0)
        await stores[0].claim_next(t, "w", task="t", agent=None, now=T0, lease_seconds=5, limit=300)
        await asyncio.gather(
            *(
                s.sweep(T0 + 10 + i / 1000, since=T0, unclaimed_timeout=0)
                for i, s in enumerate(stores * 3)
            )
        )
        got = await stores[1].claim_next(
            t, "w2", task="t", agent=None, now=T0 + 11, lease_seconds=5, limit=300
        )
        assert sorted(e.id for e in got) == sorted(e.id for e in fired)
        assert {e.attempts for e in got} == {2}
    finally:
        for s in stores:
            await s.close()


async def test_an_unreachable_database_is_a_storage_error() -> None:
    store = PostgresStorage("postgresql://127.0.0.1:1/test", open_timeout=2)
    started = time.monotonic()
    with pytest.raises(StorageError):
        await store.open()
    assert time.monotonic() - started < 10


async def test_a_dropped_connection_is_a_storage_error_then_recovers(pg_url: str) -> None:
    store = PostgresStorage(pg_url, min_size=2, max_size=2)
    await store.open()
    try:
        t = await tenant(store)
        pids = await _pool_pids(store)
        assert pids
        _terminate(pids)
        errors = 0
        for _ in range(5):
            try:
                assert await store.tenant_for_key("nothing") is None
                break
            except StorageError:
                errors += 1
        else:
            pytest.fail("the pool never recovered")
        assert errors >= 1  # the broken connection surfaced as StorageError, not a crash
        await store.list_workers(t)
    finally:
        await store.close()


async def _pool_pids(store: PostgresStorage) -> list[int]:
    pids: list[int] = []
    conns = []
    for _ in range(store.max_size):
        conn = await store.pool.getconn()
        conns.append(conn)
        pids.append(conn.info.backend_pid)
    for conn in conns:
        await store.pool.putconn(conn)
    return pids


async def test_nul_characters_are_a_validation_error(pg_url: str) -> None:
    store = PostgresStorage(pg_url)
    await store.open()
    try:
        t = await tenant(store)
        cue = await make_cue(store, t)
        with pytest.raises(ApiProblem) as caught:
            await store.fire(t, [new_fire(cue.id, payload_override={"x": "a\x00b"})], T0)
        assert (caught.value.status, caught.value.code) == (422, "validation_error")
        [ok] = await store.fire(t, [new_fire(cue.id)], T0)  # the connection is fine after it
        await store.claim(t, ok.id, "w", T0, 9)
        await store.record_outcome(t, ok.id, "w", OutcomeRecord(success=True))
    finally:
        await store.close()
