"""The sync client against our own server, with extensions and as a plain CueAPI."""

from __future__ import annotations

import threading
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

import httpx
import pytest

from cuemsg.cueapi import (
    REPLY_TOKEN,
    AuthenticationError,
    Claimed,
    ClaimFailed,
    ClaimResult,
    Conflict,
    CueAPIError,
    CueClient,
    CueList,
    ExtensionNotAvailable,
    FireRequest,
    Forbidden,
    MissingAPIKey,
    NotFound,
    OutcomeRequest,
    OutcomeResult,
    PayloadTooLarge,
    ValidationError,
)
from cuemsg.testing import RunningServer

# -- helpers ------------------------------------------------------------------------------


def _inbox(client: CueClient, task: str = "inbox", **payload: Any) -> str:
    cue = client.cues.create(f"mb-{task}-{uuid.uuid4().hex[:6]}", payload={"task": task, **payload})
    return cue.id


def _claim_one(client: CueClient, task: str, worker_id: str = "w1") -> Claimed:
    got = client.executions.claim_next(worker_id=worker_id, task=task)
    assert got.claimed, got
    assert got.execution is not None
    return got.execution


# -- discovery ----------------------------------------------------------------------------


def test_info_and_extensions(server: RunningServer, extensions_on: bool) -> None:
    with CueClient(base_url=server.base_url) as anonymous:  # no key needed for info
        info = anonymous.info()
        assert info.version
        if extensions_on:
            assert {"claim.task", "claim.wait", "fire.batch", "outcome.batch"} <= set(
                info.extensions
            )
            assert anonymous.extensions == frozenset(info.extensions)
        else:
            assert info.extensions == [] and anonymous.extensions == frozenset()


def test_extensions_probed_once_and_never_when_off(server: RunningServer, api_key: str) -> None:
    with CueClient(api_key, server.base_url) as c:
        c.extensions  # noqa: B018 - the probe
        c.extensions  # noqa: B018
        assert c.request_count == 1
    with CueClient(api_key, server.base_url, use_extensions=False) as c:
        assert c.extensions == frozenset()
        c.executions.claim_next(worker_id="w")
        assert c.request_count == 1  # only the claim: no probe


def test_register_gives_a_working_key(server: RunningServer) -> None:
    with CueClient(base_url=server.base_url) as anonymous:
        answer = anonymous.register(f"{uuid.uuid4().hex[:8]}@example.com")
    assert answer["api_key"].startswith("cue_sk_")
    with CueClient(answer["api_key"], server.base_url) as c:
        assert c.cues.list().total == 0


# -- cues ---------------------------------------------------------------------------------


def test_cue_lifecycle(client: CueClient) -> None:
    cue = client.cues.create(
        "lifecycle",
        payload={"task": "t"},
        description="d",
        schedule={"type": "recurring", "cron": "0 0 1 1 *", "timezone": "UTC"},
        retry={"max_attempts": 2},
    )
    assert (cue.name, cue.transport, cue.status, cue.payload) == (
        "lifecycle",
        "worker",
        "active",
        {"task": "t"},
    )
    assert cue.id.startswith("cue_") and cue.created_at
    assert client.cues.get(cue.id) == cue
    page = client.cues.list()
    assert isinstance(page, CueList) and page.total == 1 and page.cues == [cue]

    assert client.cues.update(cue.id, description="changed").description == "changed"
    assert client.cues.pause(cue.id).status == "paused"
    assert client.cues.list(status="paused").total == 1
    assert client.cues.list(status="active").total == 0
    assert client.cues.resume(cue.id).status == "active"
    assert client.cues.list(limit=1, offset=1).cues == []

    client.cues.delete(cue.id)
    with pytest.raises(NotFound) as info:
        client.cues.get(cue.id)
    assert info.value.code == "cue_not_found"


def test_duplicate_name_is_a_conflict(client: CueClient) -> None:
    client.cues.create("same")
    with pytest.raises(Conflict) as info:
        client.cues.create("same")
    assert info.value.code == "cue_name_taken" and info.value.status == 409


# -- fire ---------------------------------------------------------------------------------


def test_fire_merge_and_replace(client: CueClient) -> None:
    cue_id = _inbox(client, "merge", keep=1)
    merged = client.cues.fire(cue_id, {"text": "hi"})
    assert merged.status == "pending" and merged.cue_id == cue_id
    assert merged.triggered_by == "manual_fire"
    replaced = client.cues.fire(cue_id, {"task": "merge", "only": True}, "replace")
    assert client.executions.get(merged.id).payload == {"task": "merge", "keep": 1, "text": "hi"}
    assert client.executions.get(replaced.id).payload == {"task": "merge", "only": True}
    plain = client.cues.fire(cue_id)
    assert client.executions.get(plain.id).payload == {"task": "merge", "keep": 1}


@pytest.mark.parametrize(
    "send_at",
    [
        datetime.now(timezone.utc) + timedelta(hours=1),
        time.time() + 3600,
        (datetime.now(timezone.utc) + timedelta(hours=1)).isoformat(),
    ],
    ids=["datetime", "unix", "iso"],
)
def test_fire_send_at_shapes(client: CueClient, send_at: Any) -> None:
    cue_id = _inbox(client, "later")
    fired = client.cues.fire(cue_id, {"n": 1}, send_at=send_at)
    assert fired.scheduled_for is not None
    when = datetime.fromisoformat(fired.scheduled_for)
    assert when > datetime.now(timezone.utc) + timedelta(minutes=50)
    assert client.executions.list_claimable(task="later") == []  # not due yet
    past = client.cues.fire(cue_id, send_at=time.time() - 60)
    assert [c.execution_id for c in client.executions.list_claimable(task="later")] == [past.id]


def test_idempotent_fire_makes_one_execution(client: CueClient) -> None:
    cue_id = _inbox(client, "idem")
    first = client.cues.fire(cue_id, {"n": 1}, idempotency_key="msg-1")
    again = client.cues.fire(cue_id, {"n": 1}, idempotency_key="msg-1")
    assert again.id == first.id
    assert client.executions.list(cue_id=cue_id).total == 1
    with pytest.raises(Conflict) as info:
        client.cues.fire(cue_id, {"n": 2}, idempotency_key="msg-1")
    assert info.value.code == "idempotency_key_conflict"


def test_fire_many(client: CueClient, extensions_on: bool) -> None:
    a, b = _inbox(client, "fa"), _inbox(client, "fb")
    client.extensions  # noqa: B018 - probe first, so the count below is the fires only
    before = client.request_count
    fires = [FireRequest(cue_id=a, payload_override={"i": i}) for i in range(3)]
    fires.append(FireRequest(cue_id=b, idempotency_key="k", send_at=time.time()))
    results = client.cues.fire_many(fires)
    assert [r.cue_id for r in results] == [a, a, a, b]
    assert len({r.id for r in results}) == 4
    assert client.request_count - before == (1 if extensions_on else 4)
    assert [client.executions.get(r.id).payload for r in results[:3]] == [
        {"task": "fa", "i": i} for i in range(3)
    ]
    assert client.cues.fire_many([]) == []


def test_fire_many_chunks_by_100(client: CueClient, extensions_on: bool) -> None:
    cue_id = _inbox(client, "chunks")
    client.extensions  # noqa: B018
    before = client.request_count
    results = client.cues.fire_many([FireRequest(cue_id=cue_id) for _ in range(150)])
    assert len(results) == 150
    assert client.request_count - before == (2 if extensions_on else 150)


def test_fire_many_bad_item(client: CueClient, extensions_on: bool) -> None:
    cue_id = _inbox(client, "bad")
    fires = [FireRequest(cue_id=cue_id), FireRequest(cue_id="cue_missing0000")]
    with pytest.raises(NotFound):
        client.cues.fire_many(fires)
    # fire.batch is one transaction; the plain path keeps the fires before the error.
    assert client.executions.list(cue_id=cue_id).total == (0 if extensions_on else 1)


# -- claims -------------------------------------------------------------------------------


def test_claim_next_with_task(client: CueClient) -> None:
    cue_id = _inbox(client, "jobs")
    other = _inbox(client, "other")
    client.cues.fire(other, {"n": 0})
    fired = client.cues.fire(cue_id, {"n": 1})
    got = client.executions.claim_next(worker_id="w1", task="jobs")
    assert got.claimed and got.task == "jobs" and got.reason is None
    [exe] = got.executions
    assert exe.execution_id == fired.id
    assert exe.cue_id == cue_id and exe.task == "jobs"
    assert exe.payload == {"task": "jobs", "n": 1}
    assert exe.attempts == 1 and exe.lease_seconds and exe.scheduled_for == fired.scheduled_for
    nothing = client.executions.claim_next(worker_id="w1", task="jobs")
    assert nothing == ClaimResult(claimed=False, reason="no_executions_for_task", task="jobs")
    detail = client.executions.get(fired.id)
    assert detail.status == "delivering" and detail.claimed_by_worker == "w1"


def test_claim_next_without_task(client: CueClient) -> None:
    cue_id = _inbox(client, "any")
    fired = client.cues.fire(cue_id, {"n": 1})
    got = client.executions.claim_next(worker_id="w1")
    assert got.claimed and got.task is None
    exe = got.executions[0]
    assert (exe.execution_id, exe.payload, exe.task, exe.attempts) == (
        fired.id,
        {"task": "any", "n": 1},
        "any",
        1,
    )
    assert client.executions.claim_next(worker_id="w1") == ClaimResult(
        claimed=False, reason="no_executions"
    )


def test_claim_next_by_agent(client: CueClient) -> None:
    cue_id = _inbox(client, "shared")
    client.cues.fire(cue_id, {"agent": "alice"})
    bob = client.cues.fire(cue_id, {"agent": "bob"})
    got = client.executions.claim_next(worker_id="w", task="shared", agent="bob")
    assert [e.execution_id for e in got.executions] == [bob.id]


def test_claim_next_many(client: CueClient) -> None:
    cue_id = _inbox(client, "many")
    fired = [client.cues.fire(cue_id, {"i": i}).id for i in range(4)]
    got = client.executions.claim_next(worker_id="w", task="many", limit=3)
    assert [e.execution_id for e in got.executions] == fired[:3]
    assert [e.payload for e in got.executions] == [{"task": "many", "i": i} for i in range(3)]
    rest = client.executions.claim_next(worker_id="w", task="many", limit=3)
    assert [e.execution_id for e in rest.executions] == fired[3:]


def test_claim_next_waits_for_a_fire(client: CueClient, server: RunningServer) -> None:
    cue_id = _inbox(client, "wait")
    timer = threading.Timer(0.3, lambda: client.cues.fire(cue_id, {"late": True}))
    timer.start()
    try:
        started = time.monotonic()
        got = client.executions.claim_next(worker_id="w", task="wait", wait=5)
        elapsed = time.monotonic() - started
    finally:
        timer.join()
    assert got.claimed and got.executions[0].payload == {"task": "wait", "late": True}
    assert 0.2 < elapsed < 4


def test_long_poll_reads_longer_than_the_timeout(server: RunningServer, api_key: str) -> None:
    # The read timeout of a long-poll grows by its wait: a 0.5 s client timeout
    # does not cut a 1.5 s wait short.
    with CueClient(api_key, server.base_url, timeout=0.5) as c:
        got = c.executions.claim_next(worker_id="w", task="quiet", wait=1.5)
    assert got.claimed is False


def test_claim_next_wait_ends_empty(client: CueClient, extensions_on: bool) -> None:
    client.extensions  # noqa: B018
    before = client.request_count
    started = time.monotonic()
    got = client.executions.claim_next(worker_id="w", task="nobody", wait=0.6)
    assert time.monotonic() - started >= 0.6
    assert got == ClaimResult(claimed=False, reason="no_executions_for_task", task="nobody")
    sent = client.request_count - before
    if extensions_on:
        assert sent == 1  # a long-poll: no busy polling
    else:
        assert 2 <= sent <= 10  # polite polling: 50 ms doubling up to 1 s


def test_both_paths_give_the_same_claim_result(server: RunningServer, api_key: str) -> None:
    # Same tenant, same kind of execution; one client with the extensions (where listed),
    # one forced onto the plain contract.
    with (
        CueClient(api_key, server.base_url) as ext,
        CueClient(api_key, server.base_url, use_extensions=False) as plain,
    ):
        cue_id = _inbox(ext, "same")
        for _ in range(2):
            ext.cues.fire(cue_id, {"x": 1})
        a = ext.executions.claim_next(worker_id="w", task="same")
        b = plain.executions.claim_next(worker_id="w", task="same")

        def shape(r: ClaimResult) -> Any:
            return [
                (e.cue_id, e.task, e.payload, e.attempts, e.lease_seconds) for e in r.executions
            ]

        assert (a.claimed, a.task, a.reason, shape(a)) == (b.claimed, b.task, b.reason, shape(b))
        assert ext.executions.claim_next(worker_id="w", task="same") == (
            plain.executions.claim_next(worker_id="w", task="same")
        )


def test_claim_race_one_winner(server: RunningServer, api_key: str) -> None:
    """Two workers race for one execution: one wins, the other gets claimed=False."""
    with CueClient(api_key, server.base_url) as c1, CueClient(api_key, server.base_url) as c2:
        c1.extensions, c2.extensions  # noqa: B018 - probe before the race
        cue_id = _inbox(c1, "race")
        fired = c1.cues.fire(cue_id, {"n": 1})
        barrier = threading.Barrier(2)
        results: dict[str, ClaimResult] = {}

        def take(name: str, c: CueClient) -> None:
            barrier.wait()
            results[name] = c.executions.claim_next(worker_id=name, task="race")

        threads = [threading.Thread(target=take, args=(n, c)) for n, c in (("a", c1), ("b", c2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        winners = [r for r in results.values() if r.claimed]
        losers = [r for r in results.values() if not r.claimed]
        assert len(winners) == 1 and len(losers) == 1
        assert winners[0].executions[0].execution_id == fired.id
        assert losers[0].reason == "no_executions_for_task"


def test_claim_race_two_executions_each_gets_one(server: RunningServer, api_key: str) -> None:
    with CueClient(api_key, server.base_url) as c1, CueClient(api_key, server.base_url) as c2:
        c1.extensions, c2.extensions  # noqa: B018
        cue_id = _inbox(c1, "race2")
        fired = {c1.cues.fire(cue_id, {"n": i}).id for i in range(2)}
        barrier = threading.Barrier(2)
        got: list[str] = []

        def take(name: str, c: CueClient) -> None:
            barrier.wait()
            r = c.executions.claim_next(worker_id=name, task="race2")
            got.extend(e.execution_id for e in r.executions)

        threads = [threading.Thread(target=take, args=(n, c)) for n, c in (("a", c1), ("b", c2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        assert sorted(got) == sorted(fired)


def test_list_claimable_and_claim_by_id(client: CueClient) -> None:
    cue_id = _inbox(client, "byid")
    first = client.cues.fire(cue_id, {"n": 1})
    client.cues.fire(cue_id, {"n": 2})
    listing = client.executions.list_claimable(task="byid")
    assert [c.payload["n"] for c in listing] == [1, 2]
    assert listing[0].execution_id == first.id and listing[0].attempt == 0
    assert listing[0].cue_name and listing[0].task == "byid"
    claimed = client.executions.claim(first.id, worker_id="w1")
    assert claimed.execution_id == first.id and claimed.lease_seconds
    with pytest.raises(ClaimFailed) as info:
        client.executions.claim(first.id, worker_id="w2")
    assert info.value.code == "claim_failed" and info.value.status == 409
    assert [c.payload["n"] for c in client.executions.list_claimable(task="byid")] == [2]
    assert client.executions.list_claimable(task="nothing") == []


# -- heartbeat and outcome ----------------------------------------------------------------


def test_heartbeat_and_outcome(client: CueClient) -> None:
    cue_id = _inbox(client, "hb")
    client.cues.fire(cue_id)
    exe = _claim_one(client, "hb", "w1")
    beat = client.executions.heartbeat(exe.execution_id, worker_id="w1")
    assert beat.execution_id == exe.execution_id and beat.acknowledged
    assert beat.lease_extended_until
    with pytest.raises(Forbidden) as info:
        client.executions.heartbeat(exe.execution_id, worker_id="intruder")
    assert info.value.code == "not_execution_owner" and info.value.status == 403
    with pytest.raises(Forbidden):
        client.executions.report_outcome(exe.execution_id, worker_id="intruder", success=True)
    done = client.executions.report_outcome(
        exe.execution_id, worker_id="w1", success=True, result="ok", metadata={"k": 1}
    )
    assert done == OutcomeResult(
        execution_id=exe.execution_id, outcome_recorded=True, outcome_state="success"
    )
    with pytest.raises(Conflict) as again:
        client.executions.report_outcome(exe.execution_id, worker_id="w1", success=True)
    assert again.value.code == "outcome_already_recorded"
    detail = client.executions.get(exe.execution_id)
    assert detail.status == "success" and detail.outcome and detail.outcome["result"] == "ok"
    assert client.executions.list(status="success").total == 1


def test_failure_outcome_and_not_claiming(client: CueClient) -> None:
    cue_id = _inbox(client, "fail")
    pending = client.cues.fire(cue_id)
    with pytest.raises(Conflict) as info:
        client.executions.heartbeat(pending.id, worker_id="w1")
    assert info.value.code == "execution_not_claiming"
    exe = _claim_one(client, "fail")
    failed = client.executions.report_outcome(
        exe.execution_id, worker_id="w1", success=False, error="boom"
    )
    assert failed.outcome_state == "failed"


def test_report_outcomes(client: CueClient, extensions_on: bool) -> None:
    cue_id = _inbox(client, "acks")
    for i in range(3):
        client.cues.fire(cue_id, {"i": i})
    got = client.executions.claim_next(worker_id="w", task="acks", limit=3)
    ids = [e.execution_id for e in got.executions]
    client.executions.report_outcome(ids[2], worker_id="w", success=True)
    before = client.request_count
    results = client.executions.report_outcomes(
        [
            OutcomeRequest(execution_id=ids[0], success=True, result="r"),
            OutcomeRequest(execution_id=ids[1], success=False, error="e"),
            OutcomeRequest(execution_id=ids[2], success=True),
            OutcomeRequest(execution_id=str(uuid.uuid4()), success=True),
        ],
        worker_id="w",
    )
    assert client.request_count - before == (1 if extensions_on else 4)
    assert isinstance(results[0], OutcomeResult) and results[0].outcome_state == "success"
    assert isinstance(results[1], OutcomeResult) and results[1].outcome_state == "failed"
    assert isinstance(results[2], Conflict) and results[2].code == "outcome_already_recorded"
    assert isinstance(results[3], NotFound) and results[3].code == "execution_not_found"
    assert client.executions.report_outcomes([], worker_id="w") == []


def test_executions_list_and_get(client: CueClient) -> None:
    cue_id = _inbox(client, "lst")
    fired = [client.cues.fire(cue_id, {"i": i}) for i in range(3)]
    page = client.executions.list(cue_id=cue_id)
    assert page.total == 3 and {e.id for e in page.executions} == {f.id for f in fired}
    assert client.executions.list(cue_id=cue_id, limit=2).executions.__len__() == 2
    assert client.executions.list(cue_id=cue_id, status="pending").total == 3
    one = client.executions.get(fired[0].id)
    assert one.cue_id == cue_id and one.status == "pending" and one.attempts == 0
    assert one.task == "lst" and one.raw["id"] == fired[0].id
    with pytest.raises(NotFound) as info:
        client.executions.get(str(uuid.uuid4()))
    assert info.value.code == "execution_not_found"


# -- workers ------------------------------------------------------------------------------


def test_workers(client: CueClient, extensions_on: bool) -> None:
    ack = client.workers.heartbeat("daemon-1", ["inbox", "jobs"])
    assert ack.acknowledged and ack.server_time
    if extensions_on:
        [worker] = client.workers.list()
        assert worker.worker_id == "daemon-1" and worker.handlers == ["inbox", "jobs"]
        assert worker.last_heartbeat
    else:
        with pytest.raises(ExtensionNotAvailable, match=r"workers\.list"):
            client.workers.list()


def test_report_outcome_with_reply(client: CueClient, extensions_on: bool) -> None:
    requests, replies = _inbox(client, "req"), _inbox(client, "rep")
    client.cues.fire(requests, {"n": 1})
    exe = _claim_one(client, "req")
    reply = FireRequest(cue_id=replies, payload_override={"a": 2}, idempotency_key="r-1")
    before = client.request_count
    if not extensions_on:
        with pytest.raises(ExtensionNotAvailable, match=r"outcome\.reply"):
            client.executions.report_outcome(
                exe.execution_id, worker_id="w1", success=True, reply=reply
            )
        assert client.request_count == before  # refused before sending anything
        return
    done = client.executions.report_outcome(
        exe.execution_id,
        worker_id="w1",
        success=True,
        result=f"answered by {REPLY_TOKEN}",
        metadata={"reply": REPLY_TOKEN},
        reply=reply,
    )
    assert client.request_count == before + 1
    assert done.outcome_state == "success" and done.reply is not None
    outcome = client.executions.get(exe.execution_id).outcome or {}
    assert outcome["result"] == f"answered by {done.reply.id}"
    assert outcome["metadata"] == {"reply": done.reply.id}
    assert client.executions.get(done.reply.id).payload == {"task": "rep", "a": 2}


def test_claim_next_settles_first(client: CueClient, extensions_on: bool) -> None:
    inbox = _inbox(client, "jobs")
    first, second = (client.cues.fire(inbox, {"n": n}) for n in (1, 2))
    exe = _claim_one(client, "jobs")
    ack = OutcomeRequest(execution_id=exe.execution_id, success=True, result="done")
    if not extensions_on:
        with pytest.raises(ExtensionNotAvailable, match=r"claim\.settle"):
            client.executions.claim_next(worker_id="w1", task="jobs", settle=[ack])
        return
    got = client.executions.claim_next(worker_id="w1", task="jobs", settle=[ack])
    assert got.execution is not None and got.execution.execution_id == second.id
    [done] = got.settled
    assert isinstance(done, OutcomeResult) and done.execution_id == first.id
    # Nothing left: the outcome is still recorded and answered; a refused one is its error.
    stranger = OutcomeRequest(execution_id=first.id, success=True)
    mine = OutcomeRequest(execution_id=second.id, success=True)
    got = client.executions.claim_next(worker_id="w1", task="jobs", settle=[stranger, mine])
    assert not got.claimed and got.reason == "no_executions_for_task"
    assert isinstance(got.settled[0], Conflict) and isinstance(got.settled[1], OutcomeResult)
    assert client.executions.get(second.id).status == "success"


def test_injected_http_client_is_left_open(server: RunningServer, api_key: str) -> None:
    with httpx.Client() as http:
        with CueClient(api_key, server.base_url, http_client=http) as c:
            assert c.cues.list().total == 0
        assert not http.is_closed
    with pytest.raises(ValueError, match="not both"):
        CueClient(api_key, server.base_url, http_client=http, transport=httpx.HTTPTransport())


# -- errors -------------------------------------------------------------------------------


def test_bad_key_is_401(server: RunningServer) -> None:
    with (
        CueClient("cue_sk_" + "0" * 32, server.base_url) as c,
        pytest.raises(AuthenticationError) as info,
    ):
        c.cues.list()
    assert info.value.status == 401 and info.value.code == "invalid_api_key"


def test_missing_key_names_the_env_var(server: RunningServer) -> None:
    with CueClient(base_url=server.base_url) as c, pytest.raises(MissingAPIKey) as info:
        c.cues.list()
    assert "CUEAPI_API_KEY" in str(info.value)
    assert c.request_count == 0


def test_env_configuration(server: RunningServer, api_key: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("CUEAPI_API_KEY", api_key)
    monkeypatch.setenv("CUEAPI_BASE_URL", server.base_url + "/")
    with CueClient() as c:
        assert c.base_url == server.base_url
        assert c.cues.list().total == 0


def test_other_tenants_data_is_not_found(server: RunningServer, client: CueClient) -> None:
    cue_id = _inbox(client, "mine")
    fired = client.cues.fire(cue_id)
    with CueClient(server.new_key(), server.base_url) as stranger:
        with pytest.raises(NotFound):
            stranger.cues.get(cue_id)
        with pytest.raises(NotFound):
            stranger.cues.fire(cue_id)
        with pytest.raises(NotFound):
            stranger.executions.get(fired.id)
        assert stranger.executions.claim_next(worker_id="x", task="mine").claimed is False


def test_validation_error_names_the_field(client: CueClient) -> None:
    cue_id = _inbox(client, "v")
    with pytest.raises(ValidationError) as info:
        client.cues.fire(cue_id, {"a": 1}, "sideways")
    assert info.value.status == 422 and info.value.field == "merge_strategy"
    with pytest.raises(ValidationError) as retry_info:
        client.cues.create("bad-retry", retry={"max_attempts": 50})
    assert retry_info.value.field == "retry.max_attempts"


def test_oversized_body_is_413(client: CueClient) -> None:
    cue_id = _inbox(client, "big")
    with pytest.raises(PayloadTooLarge) as info:
        client.cues.fire(cue_id, {"blob": "x" * (1024 * 1024 + 1)})
    assert info.value.status == 413 and info.value.code == "payload_too_large"


def test_errors_are_cueapi_errors(client: CueClient) -> None:
    with pytest.raises(CueAPIError) as info:
        client.cues.get("cue_nothere0000")
    assert "404" in str(info.value) and info.value.body["error"]["code"] == "cue_not_found"


# -- cost ---------------------------------------------------------------------------------


def test_requests_per_message(client: CueClient, extensions_on: bool) -> None:
    """A message cycle (fire, claim with task, ack) costs 3 requests with the extensions."""
    cue_id = _inbox(client, "cost")
    client.extensions  # noqa: B018
    before = client.request_count
    client.cues.fire(cue_id, {"n": 1})
    exe = _claim_one(client, "cost")
    client.executions.report_outcome(exe.execution_id, worker_id="w1", success=True)
    assert client.request_count - before == (3 if extensions_on else 4)
