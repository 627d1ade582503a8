"""Bounded history (issue 10): settled executions and uncollected replies
older than the retention window are purged, dead letters after their own
window, and a pending message or a leased execution never."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cuemsg import cli
from cuemsg.server.settings import ServerSettings, parse_duration
from cuemsg.server.storage.base import OutcomeRecord, Storage
from cuemsg.testing import RunningServer, run_server
from tests.server.conftest import Api
from tests.storage.helpers import T0, make_cue, new_fire, opened, tenant

DAY = 86400.0


async def _settle(s: Storage, t: str, execution_id: str, at: float, ok: bool) -> None:
    await s.claim(t, execution_id, "w", at, 60)
    outcome = OutcomeRecord(success=ok, recorded_at=at, worker_id="w")
    await s.record_outcome(t, execution_id, "w", outcome)


async def _history(s: Storage) -> tuple[str, dict[str, str]]:
    """A tenant with one execution of each kind, made at T0 (one 10 days later)."""
    t = await tenant(s)
    cue = await make_cue(s, t, "inbox")
    ids: dict[str, str] = {}
    reply = {"task": "inbox", "cuemsg": {"v": 1, "id": "r1", "kind": "reply"}}
    error = {"task": "inbox", "cuemsg": {"v": 1, "id": "r2", "kind": "error"}}
    for name, override in [
        ("ok_old", None),
        ("failed_old", None),
        ("pending_old", None),
        ("leased_old", None),
        ("reply_old", reply),
        ("error_reply_old", error),
    ]:
        [e] = await s.fire(t, [new_fire(cue.id, payload_override=override)], T0)
        ids[name] = e.id
    await _settle(s, t, ids["ok_old"], T0, True)
    await _settle(s, t, ids["failed_old"], T0, False)
    await s.claim(t, ids["leased_old"], "w", T0, 100 * DAY)
    [new] = await s.fire(t, [new_fire(cue.id, T0 + 10 * DAY)], T0 + 10 * DAY)
    ids["ok_new"] = new.id
    await _settle(s, t, new.id, T0 + 10 * DAY, True)
    return t, ids


async def _left(s: Storage, t: str, ids: dict[str, str]) -> set[str]:
    return {name for name, eid in ids.items() if await s.get_execution(t, eid) is not None}


@pytest.mark.anyio
async def test_purge_takes_settled_history_and_never_live_work(db_url: str) -> None:
    async with opened(db_url) as s:
        t, ids = await _history(s)
        assert await s.purge(settled_before=None, dead_before=None) == 0
        # 7 days after T0: settled and uncollected replies go, dead letters stay.
        gone = await s.purge(settled_before=T0 + 7 * DAY, dead_before=T0 + 7 * DAY - 30 * DAY)
        assert gone == 3
        assert await _left(s, t, ids) == {"failed_old", "pending_old", "leased_old", "ok_new"}
        # 30 days on, the dead letter and ok_new go too; the pending and the leased one never.
        assert await s.purge(settled_before=T0 + 30 * DAY, dead_before=T0 + 30 * DAY) == 2
        assert await _left(s, t, ids) == {"pending_old", "leased_old"}
        assert await s.stored_bytes(t) > 0 and await s.count_unsettled(t) == 2


@pytest.mark.anyio
async def test_the_sqlite_purge_walks_every_window(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A window of 2 rows instead of 5,000, so a few rows cross many windows.
    from cuemsg.server.storage import sqlite_upkeep

    monkeypatch.setattr(sqlite_upkeep, "_PURGE_WINDOW", 2)
    async with opened(f"{tmp_path}/w.db") as s:
        t = await tenant(s)
        cue = await make_cue(s, t, "inbox")
        made = await s.fire(t, [new_fire(cue.id) for _ in range(9)], T0)
        for i, e in enumerate(made):
            if i != 4:  # one stays pending in the middle
                await _settle(s, t, e.id, T0, True)
        [late] = await s.fire(t, [new_fire(cue.id, T0 + DAY)], T0 + DAY)
        await _settle(s, t, late.id, T0 + DAY, True)
        assert await s.purge(settled_before=T0 + 1, dead_before=None) == 8
        assert await s.count_unsettled(t) == 1
        assert await s.get_execution(t, late.id) is not None


@pytest.fixture
def retaining(
    backend: str, request: pytest.FixtureRequest
) -> Callable[..., contextlib.AbstractContextManager[RunningServer]]:
    def start(**settings: Any) -> contextlib.AbstractContextManager[RunningServer]:
        db = ":memory:"
        if backend == "postgres":
            db = request.getfixturevalue("postgres_url")()
        return run_server(ServerSettings(db=db, sweep_interval=0.05), **settings)

    return start


def _settled_and_pending(api: Api) -> tuple[str, str]:
    cue = api.cue(payload={"task": "r"})
    done = api.fire(cue["id"])["id"]
    waiting = api.fire(cue["id"])["id"]
    claimed = api.http.post(f"/v1/executions/{done}/claim", json={"worker_id": "w"})
    assert claimed.status_code == 200
    answer = api.http.post(
        f"/v1/executions/{done}/outcome", json={"success": True}, headers={"X-Worker-Id": "w"}
    )
    assert answer.status_code == 200
    return done, waiting


def test_the_server_purges_in_the_background(
    retaining: Callable[..., contextlib.AbstractContextManager[RunningServer]],
) -> None:
    with retaining(retention=0.2, retention_interval=0.05) as srv:
        api = Api(srv.base_url, srv.api_key)
        done, waiting = _settled_and_pending(api)
        deadline = time.monotonic() + 10
        while api.http.get(f"/v1/executions/{done}").status_code == 200:
            assert time.monotonic() < deadline, "the settled execution was never purged"
            time.sleep(0.05)
        assert api.http.get(f"/v1/executions/{done}").status_code == 404
        assert api.execution(waiting)["status"] == "pending"
        api.close()


def test_retention_zero_keeps_everything(
    retaining: Callable[..., contextlib.AbstractContextManager[RunningServer]],
) -> None:
    with retaining(retention=0, dead_letter_retention=0, retention_interval=0.05) as srv:
        api = Api(srv.base_url, srv.api_key)
        done, _ = _settled_and_pending(api)
        time.sleep(0.3)  # several intervals: nothing runs to purge it
        assert api.execution(done)["status"] == "success"
        api.close()


def test_durations_parse_and_name_what_is_wrong() -> None:
    assert parse_duration("7d") == 7 * DAY
    assert parse_duration("30D") == 30 * DAY
    assert parse_duration("90") == 90.0
    assert parse_duration("1.5h") == 5400.0
    assert parse_duration("2w") == 14 * DAY
    assert parse_duration("0") == 0.0
    for bad in ("soon", "-1d", "nan", "inf", ""):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    defaults = ServerSettings()
    assert (defaults.retention, defaults.dead_letter_retention) == (7 * DAY, 30 * DAY)


def test_serve_refuses_a_bad_retention(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["serve", "--db", ":memory:", "--retention", "a while"]) == 2
    assert "'a while' is not a duration" in capsys.readouterr().err


def test_retention_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUEMSG_RETENTION", "1d")
    monkeypatch.setenv("CUEMSG_DEAD_LETTER_RETENTION", "0")
    settings = ServerSettings.from_env()
    assert (settings.retention, settings.dead_letter_retention) == (DAY, 0.0)
    monkeypatch.setenv("CUEMSG_RETENTION", "later")
    with pytest.raises(ValueError, match="CUEMSG_RETENTION"):
        ServerSettings.from_env()
