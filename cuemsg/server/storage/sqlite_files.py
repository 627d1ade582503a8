"""The SQLite file itself: opening it with every failure named (`StorageOpenError`
naming the path and what is wrong), and the full disk told apart from other
write failures (`StorageFull`).

A file with damaged pages is found here, at start, by `PRAGMA quick_check`,
rather than by failed requests later. The check reads every page once (about
a second per few hundred MiB), which a server start can afford.
"""

from __future__ import annotations

import os
import sqlite3

from cuemsg._exceptions import StorageFull, StorageOpenError

__all__ = ["check_file", "connect", "full_error", "is_full", "reason"]

#: SQLite's primary result code for "database or disk is full" (typeshed lacks the name).
_SQLITE_FULL = 13

#: How many problems `quick_check` reports at most (the first names the damage).
_QUICK_CHECK_ROWS = 3


def connect(path: str) -> sqlite3.Connection:
    """A connection to the database at `path`, or `StorageOpenError` saying why not.

    Checks, in order: the folder exists, the path is not a folder, SQLite can
    open it, it is a SQLite database, and its pages are intact.
    """
    if path != ":memory:" and not path.startswith("file:"):
        _check_path(path)
    try:
        # isolation_level=None: the storage issues BEGIN/COMMIT itself, one per call.
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    except sqlite3.Error as exc:
        raise StorageOpenError(path, f"SQLite cannot open it ({exc})") from exc
    try:
        # The first statement reads the header: a file that is no database fails here.
        db.execute("PRAGMA journal_mode=WAL")
        found = [str(row[0]) for row in db.execute(f"PRAGMA quick_check({_QUICK_CHECK_ROWS})")]
    except sqlite3.Error as exc:
        db.close()
        raise StorageOpenError(path, reason(exc)) from exc
    if found != ["ok"]:
        db.close()
        # One line: quick_check's report spans several, under a "*** in database" title.
        lines = [ln for text in found for ln in text.splitlines() if not ln.startswith("***")]
        raise StorageOpenError(
            path, f"the file is damaged (quick_check: {'; '.join(lines)}); restore it from a backup"
        )
    return db


def check_file(path: str) -> None:
    """Raise `StorageOpenError` now if the database at `path` cannot be opened.

    `open_storage` runs it before the app starts; the storage checks again when
    it opens (the file may change in between; a check costs ~50 ms per 100 MiB).
    """
    if path != ":memory:":
        connect(path).close()


def _check_path(path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise StorageOpenError(path, f"the folder {folder!r} does not exist")
    if os.path.isdir(path):
        raise StorageOpenError(path, "it is a folder, not a database file")


def reason(exc: sqlite3.Error) -> str:
    """What a failure while opening means, in words an operator can act on."""
    text = str(exc)
    if "file is not a database" in text:
        return "it is not a SQLite database (or its header is damaged)"
    if "malformed" in text or "corrupt" in text:
        return f"the file is damaged or truncated ({text}); restore it from a backup"
    if "readonly" in text or "unable to open" in text:
        return f"SQLite cannot open it for reading and writing ({text})"
    if is_full(exc):
        return "the disk is full"
    return text


def is_full(exc: BaseException) -> bool:
    """Whether `exc` is SQLite's "database or disk is full" (SQLITE_FULL)."""
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return (int(code) & 0xFF) == _SQLITE_FULL
    return "database or disk is full" in str(exc)


def full_error(path: str, exc: sqlite3.Error) -> StorageFull:
    """The `StorageFull` to raise (`from exc`) for a SQLITE_FULL failure on `path`."""
    return StorageFull(f"SQLite database {path!r}: {exc}")
