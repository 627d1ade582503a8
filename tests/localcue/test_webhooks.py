"""Webhook delivery by the embedded server, to a real receiver on loopback:
the body and signed headers, retries, final failure and `on_failure`, the
SSRF guard, the secret routes, and a restart mid-delivery."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from cueapi import verify_webhook

from cuemsg.server.settings import ServerSettings
from cuemsg.testing import RunningServer, run_server
from cuemsg.webhook import verify
from tests.localcue.receiver import receiver

FAST: dict[str, Any] = {
    "sweep_interval": 0.05,
    "webhook_backoff_scale": 0.0005,
    "webhook_timeout": 1.0,
}

# Settings of a server that is not bound to loopback only (so webhooks may not
# call loopback), with registration open for the tests' keys.
PUBLIC = ServerSettings(db=":memory:", host="0.0.0.0", registration="open")


@pytest.fixture
def srv() -> Iterator[RunningServer]:
    with run_server(ServerSettings(db=":memory:", **FAST)) as running:
        yield running


def _http(srv: RunningServer) -> httpx.Client:
    return httpx.Client(
        base_url=srv.base_url, headers={"Authorization": f"Bearer {srv.api_key}"}, timeout=10
    )


def _hook(http: httpx.Client, url: str, **fields: Any) -> dict[str, Any]:
    body = {"name": f"hook-{time.monotonic_ns()}", "transport": "webhook", **fields}
    body.setdefault("callback", {"url": url})
    answer = http.post("/v1/cues", json=body)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def _settled(http: httpx.Client, execution_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        execution = http.get(f"/v1/executions/{execution_id}").json()
        if execution["status"] in ("success", "failed"):
            return dict(execution)
        time.sleep(0.05)
    raise AssertionError(f"execution {execution_id} still {execution['status']}")


def test_a_fired_webhook_is_delivered_signed(srv: RunningServer) -> None:
    with receiver((200, 0.0)) as rec, _http(srv) as http:
        cue = _hook(
            http,
            "",
            callback={
                "url": rec.url + "/hook",
                "method": "PUT",
                "headers": {"X-Team": "blue", "X-CueAPI-Signature": "forged"},
            },
            payload={"report": "daily"},
        )
        fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
        (got,) = rec.wait_for(1)
        execution = _settled(http, fired["id"])
        secret = http.get("/v1/auth/webhook-secret").json()["webhook_secret"]
    assert got.method == "PUT" and got.path == "/hook"
    assert got.json() == {
        "execution_id": fired["id"],
        "cue_id": cue["id"],
        "name": cue["name"],
        "scheduled_for": fired["scheduled_for"],
        "attempt": 1,
        "payload": {"report": "daily"},
    }
    h = got.headers
    assert h["X-Team"] == "blue"
    assert h["X-CueAPI-Signature"] != "forged"
    assert h["X-CueAPI-Cue-Id"] == cue["id"]
    assert h["X-CueAPI-Execution-Id"] == fired["id"]
    assert h["X-CueAPI-Scheduled-For"] == fired["scheduled_for"]
    assert h["X-CueAPI-Attempt"] == "1"
    signature, stamp = h["X-CueAPI-Signature"], h["X-CueAPI-Timestamp"]
    assert secret.startswith("whsec_")
    assert verify(got.body, signature=signature, timestamp=stamp, secret=secret)
    # The official SDK's verifier agrees: the signature is CueAPI's v1.
    assert verify_webhook(got.body, signature, secret, stamp)
    assert not verify(got.body + b" ", signature=signature, timestamp=stamp, secret="whsec_x")
    assert execution["status"] == "success"
    assert execution["outcome"]["result"] == '{"received": 1}'


def test_a_failing_endpoint_is_retried_until_it_answers(srv: RunningServer) -> None:
    with receiver((500, 0.0), (503, 0.0), (200, 0.0)) as rec, _http(srv) as http:
        cue = _hook(http, rec.url, retry={"max_attempts": 3, "backoff_minutes": [1, 2]})
        fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
        execution = _settled(http, fired["id"])
    assert [r.json()["attempt"] for r in rec.requests] == [1, 2, 3]
    assert execution["status"] == "success"
    assert execution["attempts"] == 3
    assert execution["detail"]["last_status"] == 200


def test_final_failure_runs_on_failure(srv: RunningServer) -> None:
    with receiver((404, 0.0)) as rec, receiver((200, 0.0)) as alarm, _http(srv) as http:
        cue = _hook(
            http,
            rec.url,
            retry={"max_attempts": 2, "backoff_minutes": [1]},
            on_failure={"webhook": alarm.url + "/alarm", "pause": True},
        )
        assert cue["on_failure"] == {"email": True, "webhook": alarm.url + "/alarm", "pause": True}
        fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
        execution = _settled(http, fired["id"])
        (notice,) = alarm.wait_for(1)
        paused = http.get(f"/v1/cues/{cue['id']}").json()
        secret = http.get("/v1/auth/webhook-secret").json()["webhook_secret"]
    assert len(rec.requests) == 2
    assert execution["status"] == "failed"
    assert execution["outcome"]["error"] == "endpoint returned 404 (attempt 2 of 2)"
    body = notice.json()
    assert body["event"] == "execution.failed"
    assert body["execution_id"] == fired["id"]
    assert body["error"] == execution["outcome"]["error"]
    h = notice.headers
    assert verify(
        notice.body,
        signature=h["X-CueAPI-Signature"],
        timestamp=h["X-CueAPI-Timestamp"],
        secret=secret,
    )
    assert paused["status"] == "paused"


def test_a_slow_endpoint_times_out_readably(srv: RunningServer) -> None:
    with receiver((200, 3.0)) as rec, _http(srv) as http:
        cue = _hook(http, rec.url, retry={"max_attempts": 1})
        fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
        execution = _settled(http, fired["id"])
    assert execution["outcome"]["error"] == "timed out after 1 s (attempt 1 of 1)"


def test_the_secret_is_regenerated_only_when_confirmed(srv: RunningServer) -> None:
    with _http(srv) as http:
        first = http.get("/v1/auth/webhook-secret").json()["webhook_secret"]
        assert http.get("/v1/auth/webhook-secret").json()["webhook_secret"] == first
        refused = http.post("/v1/auth/webhook-secret/regenerate")
        assert refused.status_code == 400
        assert refused.json()["error"]["code"] == "confirmation_required"
        assert "X-Confirm-Destructive" in refused.json()["error"]["message"]
        again = http.post(
            "/v1/auth/webhook-secret/regenerate", headers={"X-Confirm-Destructive": "true"}
        ).json()["webhook_secret"]
        assert again != first and again.startswith("whsec_")
        assert http.get("/v1/auth/webhook-secret").json()["webhook_secret"] == again
        other = httpx.get(
            srv.base_url + "/v1/auth/webhook-secret",
            headers={"Authorization": f"Bearer {srv.new_key('other@example.com')}"},
        ).json()["webhook_secret"]
    assert other not in (first, again)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://127.0.0.1:9/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "metadata"),
        ("http://[::ffff:192.168.0.1]/hook", "private"),
        ("http://[fe80::1]/hook", "link-local"),
    ],
)
def test_private_addresses_are_refused_at_creation(url: str, why: str) -> None:
    with run_server(PUBLIC) as srv, _http(srv) as http:
        answer = http.post(
            "/v1/cues", json={"name": "h", "transport": "webhook", "callback": {"url": url}}
        )
        alarm = http.post(
            "/v1/cues",
            json={
                "name": "w",
                "transport": "worker",
                "on_failure": {"webhook": url},
            },
        )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "callback.url"
    assert why in answer.json()["error"]["message"]
    assert alarm.status_code == 422
    assert alarm.json()["error"]["field"] == "on_failure.webhook"


def test_webhook_allow_lets_a_range_through() -> None:
    settings = PUBLIC.replace(webhook_allow=("127.0.0.0/8",))
    with run_server(settings, **FAST) as srv, receiver() as rec, _http(srv) as http:
        cue = _hook(http, rec.url)
        fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
        assert _settled(http, fired["id"])["status"] == "success"


def test_a_url_is_checked_again_at_delivery() -> None:
    # Created while the name did not resolve (accepted then), refused when delivered.
    with run_server(ServerSettings(db=":memory:", **FAST)) as srv, _http(srv) as http:
        cue = _hook(http, "http://no-such-host.invalid/hook", retry={"max_attempts": 1})
        fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
        execution = _settled(http, fired["id"])
    assert execution["outcome"]["error"].startswith("refused: host 'no-such-host.invalid'")


def test_unknown_on_failure_fields_are_refused(srv: RunningServer) -> None:
    with _http(srv) as http:
        answer = http.post(
            "/v1/cues",
            json={"name": "x", "transport": "worker", "on_failure": {"page": "ops"}},
        )
    assert answer.status_code == 422
    assert answer.json()["error"]["field"] == "on_failure.page"


def test_a_delivery_cut_by_a_restart_is_made_again(tmp_path: Path) -> None:
    db = str(tmp_path / "restart.db")
    settings = ServerSettings(db=db, **FAST)
    with receiver((200, 4.0), (200, 0.0)) as rec:
        with run_server(settings) as first, _http(first) as http:
            cue = _hook(http, rec.url)
            fired = http.post(f"/v1/cues/{cue['id']}/fire", json={}).json()
            rec.wait_for(1)  # the first delivery is in flight: stop the server now
            key = first.api_key
        with run_server(settings) as second:
            http = httpx.Client(
                base_url=second.base_url, headers={"Authorization": f"Bearer {key}"}, timeout=10
            )
            with http:
                execution = _settled(http, fired["id"], timeout=30)
    assert execution["status"] == "success"
    assert [r.json()["execution_id"] for r in rec.requests][:2] == [fired["id"]] * 2
    assert execution["attempts"] == 2
