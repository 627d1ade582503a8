"""A full disk: writes answer 507 `storage_full` with `Retry-After`, reads go on,
nothing half-written is stored, and writes work again once space is freed.

SQLite runs on a real, small tmpfs where the machine lets the test mount one
(root); elsewhere the same SQLITE_FULL is provoked with `PRAGMA max_page_count`
on the server's connection. PostgreSQL's disk-full error (SQLSTATE 53100) is
raised for real by a trigger, since a test cannot fill the database's disk.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest

from cuemsg.server.settings import ServerSettings
from cuemsg.testing import RunningServer, run_server
from tests.conftest import PostgresURLs
from tests.server.conftest import Api, error_of

DISK_BYTES = 2 * 1024 * 1024
BODY = {"payload_override": {"blob": "x" * 40_000}}


@contextlib.contextmanager
def _tmpfs(where: Path, *, mount: bool) -> Iterator[bool]:
    """Mount a small tmpfs at `where`; yields False (nothing mounted) where not allowed."""
    where.mkdir()
    if not mount or os.geteuid() != 0:
        yield False
        return
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(where)],
        capture_output=True,
    )
    if mounted.returncode != 0:
        yield False
        return
    try:
        yield True
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def _fill_until_full(api: Api, cue_id: str) -> tuple[int, httpx.Response]:
    """Fire until the storage refuses; returns (fires stored, the refusal)."""
    for stored in range(10_000):
        answer = api.http.post(f"/v1/cues/{cue_id}/fire", json=BODY)
        if answer.status_code != 200:
            return stored, answer
    raise AssertionError("the storage never filled up")


def _reads_still_work(api: Api, cue_id: str, stored: int) -> None:
    listing = api.http.get("/v1/executions", params={"limit": 1})
    assert listing.status_code == 200, listing.text
    assert listing.json()["total"] == stored  # the refused fire left nothing behind
    assert api.http.get(f"/v1/cues/{cue_id}").status_code == 200
    claimable = api.http.get("/v1/executions/claimable")
    assert claimable.status_code == 200, claimable.text
    assert api.http.get("/health").status_code == 200


def _assert_full(answer: httpx.Response) -> None:
    err = error_of(answer, 507, "storage_full")
    assert "storage is full" in err["message"]
    assert int(answer.headers["Retry-After"]) > 0


@pytest.mark.parametrize("limit", ["tmpfs", "max_page_count"])
def test_sqlite_full_disk(tmp_path: Path, limit: str) -> None:
    with _tmpfs(tmp_path / "disk", mount=limit == "tmpfs") as mounted:
        if limit == "tmpfs" and not mounted:
            pytest.skip("cannot mount a tmpfs here (needs root); the max_page_count case runs")
        path = tmp_path / "disk" / "cuemsg.db"
        with (
            run_server(ServerSettings(db=str(path))) as srv,
            contextlib.closing(Api(srv.base_url, srv.new_key())) as api,
        ):
            cue_id = api.cue()["id"]
            free_again: Callable[[], None]
            if mounted:
                # Leave little room, so the database fills the disk within a few fires.
                ballast = tmp_path / "disk" / "ballast"
                disk = os.statvfs(ballast.parent)
                ballast.write_bytes(b"\0" * (disk.f_bavail * disk.f_frsize - 600_000))
                free_again = ballast.unlink
            else:
                free_again = _cap_pages(srv)
            stored, refused = _fill_until_full(api, cue_id)
            assert stored > 0
            _assert_full(refused)
            _reads_still_work(api, cue_id, stored)
            claim = api.claim(task=None)
            assert claim.status_code in (200, 507), claim.text  # a claim writes
            free_again()
            assert api.http.post(f"/v1/cues/{cue_id}/fire", json=BODY).status_code == 200


def _cap_pages(srv: RunningServer) -> Callable[[], None]:
    """Fallback without tmpfs: cap the server connection's database size (SQLITE_FULL)."""
    db = srv._server.app_server.storage.db  # type: ignore[attr-defined]
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count = {pages + 60}")
    return lambda: db.execute("PRAGMA max_page_count = 1073741823")


@pytest.mark.postgres
def test_postgres_disk_full_maps_the_same(postgres_url: PostgresURLs) -> None:
    import psycopg

    url = postgres_url()
    schema = unquote(url).rsplit("search_path=", 1)[1]
    with (
        run_server(ServerSettings(db=url)) as srv,
        contextlib.closing(Api(srv.base_url, srv.new_key())) as api,
    ):
        cue_id = api.cue()["id"]
        assert api.http.post(f"/v1/cues/{cue_id}/fire", json=BODY).status_code == 200
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                f'CREATE FUNCTION "{schema}".disk_full() RETURNS trigger LANGUAGE plpgsql AS '
                "$$ BEGIN RAISE EXCEPTION 'could not extend file: No space left on device' "
                "USING ERRCODE = '53100'; END $$"
            )
            conn.execute(
                f'CREATE TRIGGER disk_full BEFORE INSERT ON "{schema}".cuemsg_executions '
                f'FOR EACH ROW EXECUTE FUNCTION "{schema}".disk_full()'
            )
            _assert_full(api.http.post(f"/v1/cues/{cue_id}/fire", json=BODY))
            _reads_still_work(api, cue_id, 1)
            conn.execute(f'DROP TRIGGER disk_full ON "{schema}".cuemsg_executions')
        assert api.http.post(f"/v1/cues/{cue_id}/fire", json=BODY).status_code == 200
