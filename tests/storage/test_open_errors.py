"""Opening a database that cannot work raises one `StorageOpenError` naming the
path (or URL, password hidden) and what is wrong; `cuemsg serve --db` prints it
as one line and exits 2. Damaged SQLite pages are found at start, not by failed
requests later."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from cuemsg import StorageError, StorageOpenError
from cuemsg.server.app import open_storage
from cuemsg.server.settings import ServerSettings
from cuemsg.server.storage.sqlite import SQLiteStorage
from cuemsg.server.storage.sqlite_files import reason

pytestmark = pytest.mark.anyio


def _real_db(path: Path) -> Path:
    """A database of a few hundred pages, as a server would leave it."""
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("CREATE TABLE filler (x TEXT)")
        db.executemany("INSERT INTO filler VALUES (?)", [("y" * 500,)] * 2000)
    return path


def _not_a_database(tmp_path: Path) -> Path:
    path = tmp_path / "notes.txt"
    path.write_text("these are my notes, not a database\n" * 200)
    return path


def _truncated(tmp_path: Path) -> Path:
    path = _real_db(tmp_path / "cut.db")
    os.truncate(path, path.stat().st_size // 2)
    return path


def _damaged(tmp_path: Path) -> Path:
    """Intact header, garbage over part of one page: only an integrity check sees it."""
    path = _real_db(tmp_path / "damaged.db")
    with open(path, "r+b") as f:
        f.seek(4096 * 5 + 10)
        f.write(bytes(range(256)) * 12)
    return path


CASES = {
    "not a database": (_not_a_database, "not a SQLite database"),
    "truncated": (_truncated, "damaged or truncated"),
    "damaged pages": (_damaged, "the file is damaged (quick_check: On tree page"),
    "a folder": (lambda tmp: tmp, "it is a folder, not a database file"),
    "missing folder": (lambda tmp: tmp / "no" / "such" / "x.db", "does not exist"),
}


@pytest.mark.parametrize("case", list(CASES))
async def test_open_names_the_path_and_the_problem(tmp_path: Path, case: str) -> None:
    make, reason = CASES[case]
    path = str(make(tmp_path))
    # open_storage checks a SQLite file at once; the storage checks again on open.
    with pytest.raises(StorageOpenError) as early:
        open_storage(ServerSettings(db=f"sqlite:///{path}"))
    with pytest.raises(StorageOpenError) as late:
        await SQLiteStorage(path).open()
    for err in (early.value, late.value):
        assert isinstance(err, StorageError)
        assert err.path == path
        assert reason in err.reason
        assert repr(path) in str(err) and reason in str(err)
        assert "\n" not in str(err)


async def test_a_sound_file_and_memory_open(tmp_path: Path) -> None:
    for path in (str(_real_db(tmp_path / "ok.db")), str(tmp_path / "new.db"), ":memory:"):
        storage = SQLiteStorage(path)
        await storage.open()
        assert await storage.get_meta("schema_version") is not None
        await storage.close()


async def test_a_read_only_file_is_named(tmp_path: Path) -> None:
    with (
        _read_only_copy(_real_db(tmp_path / "ro.db"), tmp_path / "ro") as path,
        pytest.raises(StorageOpenError, match="cannot open it for reading and writing"),
    ):
        await SQLiteStorage(str(path)).open()


@contextlib.contextmanager
def _read_only_copy(db: Path, where: Path) -> Iterator[Path]:
    """`db` copied into `where`, which is then made read-only: by permissions for
    an ordinary user; for root (CI), who writes through permissions, a tmpfs
    remounted read-only."""
    where.mkdir()
    if os.geteuid() != 0:
        path = Path(shutil.copy(db, where))
        path.chmod(0o444)
        where.chmod(0o555)
        try:
            yield path
        finally:
            where.chmod(0o755)
        return
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(where)], check=True)
    try:
        path = Path(shutil.copy(db, where))
        subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
        yield path
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def test_reason_of_an_unopenable_file(tmp_path: Path) -> None:
    # A read-only open of a missing file fails the way an unwritable one does.
    with pytest.raises(sqlite3.OperationalError) as caught:
        sqlite3.connect(f"file:{tmp_path / 'gone.db'}?mode=ro", uri=True)
    assert reason(caught.value).startswith("SQLite cannot open it for reading and writing")


@pytest.mark.parametrize("case", list(CASES))
def test_serve_prints_one_line_and_exits_2(tmp_path: Path, case: str) -> None:
    make, reason = CASES[case]
    path = str(make(tmp_path))
    proc = subprocess.run(
        [sys.executable, "-m", "cuemsg", "serve", "--db", path, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert path in lines[0] and reason in lines[0]
    assert "Traceback" not in proc.stdout


# A PostgreSQL URL nothing listens on (port 1): refused at once, no server needed.
UNREACHABLE = "postgresql://cuemsg:s3cret@127.0.0.1:1/test"


async def test_postgres_unreachable_is_one_line_without_the_password() -> None:
    pytest.importorskip("psycopg", reason="the PostgreSQL extra is not installed")
    storage = open_storage(ServerSettings(db=UNREACHABLE))
    with pytest.raises(StorageOpenError) as caught:
        await storage.open()
    err = caught.value
    assert err.path == "postgresql://cuemsg:***@127.0.0.1:1/test"
    assert "s3cret" not in str(err) and "\n" not in str(err)
    assert "refused" in err.reason or "failed" in err.reason


def test_serve_on_an_unreachable_postgres_exits_2() -> None:
    pytest.importorskip("psycopg", reason="the PostgreSQL extra is not installed")
    proc = subprocess.run(
        [sys.executable, "-m", "cuemsg", "serve", "--db", UNREACHABLE, "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    [line] = proc.stderr.strip().splitlines()
    assert "cuemsg:***@127.0.0.1:1/test" in line and "s3cret" not in line
