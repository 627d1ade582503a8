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
  `RELAXED` in `statements.py`); fires and outcomes wait for it.
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

The modules: `schema.py` (migrations), `connection.py` (pool, LISTEN, open and
close), `relay.py` (NOTIFY payloads), `statements.py` (shared SQL fragments),
`fires.py` (firing), `feed.py` (the event feed and redrive) and `storage.py`
(`PostgresStorage`, everything else).
"""

from cuemsg.server.storage.postgres.connection import split_pool_params
from cuemsg.server.storage.postgres.relay import channel_name
from cuemsg.server.storage.postgres.schema import SCHEMA_VERSION, parse_search_path
from cuemsg.server.storage.postgres.storage import PostgresStorage

__all__ = [
    "SCHEMA_VERSION",
    "PostgresStorage",
    "channel_name",
    "parse_search_path",
    "split_pool_params",
]
