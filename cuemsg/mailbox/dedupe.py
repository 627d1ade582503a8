"""Dedupe stores: which message ids a mailbox has already handled, and their replies.

Delivery is at-least-once: a message can arrive again (its receiver lost the
lease after handling it, or died between handling and acking). A mailbox
records each handled message id before it acks; a redelivered id is then
acked without calling the handler again, and for a request the recorded
reply is sent again (with its original idempotency key, so the requester
never sees two replies).

`MemoryDedupe` (the default) forgets on restart; `SQLiteDedupe` keeps the
record in a file, so a receiver restarted after a crash (or several
processes on one machine sharing the file) still handles each message once.
"""

from __future__ import annotations

import sqlite3
import threading
import time
import weakref
from collections import OrderedDict
from pathlib import Path
from typing import NamedTuple, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_DEDUPE_SIZE",
    "DedupeStore",
    "MemoryDedupe",
    "SQLiteDedupe",
    "Seen",
]

#: Message ids a `MemoryDedupe` remembers (least recently used ones are dropped first).
DEFAULT_DEDUPE_SIZE = 10_000
#: Seconds a `SQLiteDedupe` keeps a record (a week: well past any redelivery).
DEFAULT_DEDUPE_MAX_AGE = 7 * 24 * 3600.0


class Seen(NamedTuple):
    """A handled message: `reply` is the recorded reply (opaque bytes), if any."""

    reply: bytes | None


@runtime_checkable
class DedupeStore(Protocol):
    """Where a mailbox records the messages it handled. Must be safe to call from threads."""

    def seen(self, key: str) -> Seen | None:
        """The record of `key`, or None if it was never handled (or was forgotten)."""
        ...

    def remember(self, key: str, reply: bytes | None = None) -> None:
        """Record `key` as handled, with its reply if it had one."""
        ...

    def close(self) -> None:
        """Release resources (a no-op for memory)."""
        ...


class MemoryDedupe:
    """A bounded, in-memory LRU of handled message ids (the default store).

    Args:
        maxsize: ids kept; the least recently used are forgotten first.
    """

    def __init__(self, maxsize: int = DEFAULT_DEDUPE_SIZE) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, not {maxsize}")
        self.maxsize = maxsize
        self._data: OrderedDict[str, bytes | None] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._data)

    def seen(self, key: str) -> Seen | None:
        """See `DedupeStore.seen`."""
        with self._lock:
            if key not in self._data:
                return None
            self._data.move_to_end(key)
            return Seen(self._data[key])

    def remember(self, key: str, reply: bytes | None = None) -> None:
        """See `DedupeStore.remember`."""
        with self._lock:
            self._data[key] = reply
            self._data.move_to_end(key)
            while len(self._data) > self.maxsize:
                self._data.popitem(last=False)

    def close(self) -> None:
        """Nothing to release."""


class SQLiteDedupe:
    """Handled message ids in a SQLite file: dedupe that survives restarts.

    Several processes may share one file (SQLite's WAL mode serialises the
    writes). Records older than `max_age` seconds are dropped now and then.

    Args:
        path: the database file (created if missing).
        max_age: seconds a record is kept.
    """

    def __init__(self, path: str | Path, *, max_age: float = DEFAULT_DEDUPE_MAX_AGE) -> None:
        self.path = str(path)
        self.max_age = max_age
        self._lock = threading.Lock()
        self._writes = 0
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS cuemsg_dedupe ("
                "key TEXT PRIMARY KEY, reply BLOB, at REAL NOT NULL)"
            )
            self._db.execute("CREATE INDEX IF NOT EXISTS cuemsg_dedupe_at ON cuemsg_dedupe (at)")
            self._db.commit()
        except BaseException:  # e.g. the file is no database: the caller gets no object to close
            self._db.close()
            raise
        # A mailbox does not close the store it was given (it may be shared), and one
        # made inline (`dedupe=SQLiteDedupe(path)`) is closed by no one: close the
        # connection when the store is collected, not leave it open to the collector.
        weakref.finalize(self, self._db.close)

    def seen(self, key: str) -> Seen | None:
        """See `DedupeStore.seen`."""
        with self._lock:
            row = self._db.execute(
                "SELECT reply FROM cuemsg_dedupe WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else Seen(row[0])

    def remember(self, key: str, reply: bytes | None = None) -> None:
        """See `DedupeStore.remember`."""
        now = time.time()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO cuemsg_dedupe (key, reply, at) VALUES (?, ?, ?)",
                (key, reply, now),
            )
            self._writes += 1
            if self._writes % 1000 == 0:
                self._db.execute("DELETE FROM cuemsg_dedupe WHERE at < ?", (now - self.max_age,))
            self._db.commit()

    def close(self) -> None:
        """Close the database connection (also done when the store is collected)."""
        with self._lock:
            self._db.close()
