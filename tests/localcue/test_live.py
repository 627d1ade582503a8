"""The local CueAPI against real time and real processes: two `cuemsg serve`
replicas on PostgreSQL firing scheduled runs exactly once while one is
SIGKILLed, and the official `cueapi-sdk` creating a cron cue and a `once`
webhook cue against `cuemsg serve` and seeing both fire (a real one-minute
cron, so this file is slow)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest
from cueapi import CueAPI, verify_webhook

from cuemsg.testing import free_port
from tests.localcue.receiver import receiver
from tests.storage.test_replicas import Replica, client, register, replicas  # noqa: F401

pytestmark = pytest.mark.slow


def _iso(seconds_from_now: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds_from_now)).isoformat()


@pytest.mark.postgres
def test_two_replicas_fire_each_run_once_while_one_is_killed(
    replicas: Callable[..., list[Replica]],  # noqa: F811
) -> None:
    a, b = replicas(2)
    key = register(a.base_url)
    with client(a.base_url, key) as http:
        cues = []
        for i in range(16):
            answer = http.post(
                "/v1/cues",
                json={
                    "name": f"run-{i}",
                    "transport": "worker",
                    "payload": {"task": "scheduled"},
                    "schedule": {"type": "once", "at": _iso(1.0 + i * 0.25)},
                },
            )
            assert answer.status_code == 201, answer.text
            cues.append(answer.json()["id"])
    time.sleep(2.5)  # half of the runs are due by now
    a.kill()
    time.sleep(4.0)  # the rest come due with b alone
    with client(b.base_url, key) as http:
        counts = []
        for cue_id in cues:
            listed = http.get("/v1/executions", params={"cue_id": cue_id}).json()
            assert all(e["triggered_by"] == "schedule" for e in listed["executions"])
            counts.append(listed["total"])
            assert http.get(f"/v1/cues/{cue_id}").json()["run_count"] == 1
    assert counts == [1] * len(cues)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """`cuemsg serve` on a SQLite file, on loopback (so webhooks may call loopback)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEMSG_", "CUEAPI_"))}
    log = open(tmp_path / "serve.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cuemsg",
            "serve",
            "--db",
            str(tmp_path / "sdk.db"),
            "--port",
            str(port),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    base_url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()
            try:
                if httpx.get(base_url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "cuemsg serve did not start"
            time.sleep(0.05)
        yield base_url
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()


def test_the_official_sdk_sees_a_cron_and_a_once_webhook_cue_fire(served: str) -> None:
    key = register(served)
    with receiver((200, 0.0)) as rec, CueAPI(key, base_url=served) as sdk:
        cron = sdk.cues.create(
            "every-minute", cron="* * * * *", callback=rec.url + "/cron", payload={"n": 1}
        )
        once = sdk.cues.create("soon", at=_iso(1.0), callback=rec.url + "/once")
        assert cron.schedule.type == "recurring" and cron.next_run is not None
        assert once.next_run is not None
        (soon,) = rec.wait_for(1, timeout=15, path="/once")
        (minute,) = rec.wait_for(1, timeout=70, path="/cron")  # a real cron: within a minute
        secret = httpx.get(
            served + "/v1/auth/webhook-secret", headers={"Authorization": f"Bearer {key}"}
        ).json()["webhook_secret"]
        for got in (soon, minute):
            h = got.headers
            assert verify_webhook(
                got.body, h["X-CueAPI-Signature"], secret, h["X-CueAPI-Timestamp"]
            )
        assert minute.json()["payload"] == {"n": 1}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            runs = sdk.executions.list(cue_id=cron.id)["executions"]
            if runs and runs[0]["status"] == "success":
                break
            time.sleep(0.1)
        assert runs[0]["triggered_by"] == "schedule"
        assert runs[0]["status"] == "success"
        after = sdk.cues.get(cron.id)
        assert after.run_count >= 1 and after.last_run is not None
        assert after.next_run is not None and after.next_run > datetime.now(timezone.utc)
        finished = sdk.cues.get(once.id)
    assert finished.status == "completed"
