"""50 clients for 30 s against one server over loopback, each firing, claiming
and settling in a loop: 0 errors, 0 double claims, 0 lost.

Speed is not asserted: the figures are printed for docs/reliability.md.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.helpers import ServerProcess

CLIENTS = 50
SECONDS = 30.0


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    proc = ServerProcess(str(tmp_path / "load.db"), tmp_path / "serve.log")
    proc.start()
    try:
        yield proc
    finally:
        proc.stop()


class Tally:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.fired: set[str] = set()
        self.claims: collections.Counter[str] = collections.Counter()
        self.settled: set[str] = set()
        self.errors: list[str] = []
        self.requests = 0


def _client(base_url: str, key: str, cue_id: str, me: int, until: float, tally: Tally) -> None:
    worker = f"w{me}"
    headers = {"Authorization": f"Bearer {key}", "X-Worker-Id": worker}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        i = 0
        while time.monotonic() < until:
            i += 1
            try:
                _round(http, cue_id, worker, f"{me}-{i}", tally)
            except httpx.HTTPError as exc:
                with tally.lock:
                    tally.errors.append(f"{worker}: {type(exc).__name__}: {exc}")


def _round(http: httpx.Client, cue_id: str, worker: str, tag: str, tally: Tally) -> None:
    fired = http.post(
        f"/v1/cues/{cue_id}/fire",
        json={"payload_override": {"task": "load", "tag": tag}, "idempotency_key": tag},
    )
    claimed = http.post(
        "/v1/executions/claim", json={"worker_id": worker, "task": "load", "wait": 1}
    )
    settled = None
    if claimed.status_code == 200:
        eid = claimed.json()["execution_id"]
        settled = http.post(f"/v1/executions/{eid}/outcome", json={"success": True})
    with tally.lock:
        tally.requests += 2 if settled is None else 3
        if fired.status_code == 200:
            tally.fired.add(fired.json()["id"])
        else:
            tally.errors.append(f"fire {tag}: {fired.status_code} {fired.text}")
        if claimed.status_code == 200:
            tally.claims[claimed.json()["execution_id"]] += 1
        elif claimed.json().get("error", {}).get("code") != "claim_failed":
            tally.errors.append(f"claim: {claimed.status_code} {claimed.text}")
        if settled is not None:
            if settled.status_code == 200:
                tally.settled.add(claimed.json()["execution_id"])
            else:
                tally.errors.append(f"outcome: {settled.status_code} {settled.text}")


def _drain(base_url: str, key: str, tally: Tally) -> None:
    """Claim and settle what the clients left when time ran out."""
    headers = {"Authorization": f"Bearer {key}", "X-Worker-Id": "drain"}
    with httpx.Client(base_url=base_url, headers=headers, timeout=30) as http:
        for _ in range(10 * CLIENTS):  # bounded: at most one left per client, in theory
            claimed = http.post("/v1/executions/claim", json={"worker_id": "drain", "task": "load"})
            if claimed.status_code == 409:
                return
            assert claimed.status_code == 200, claimed.text
            eid = claimed.json()["execution_id"]
            tally.claims[eid] += 1
            settled = http.post(f"/v1/executions/{eid}/outcome", json={"success": True})
            assert settled.status_code == 200, settled.text
            tally.settled.add(eid)
    raise AssertionError("draining did not end")


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_fifty_clients_for_thirty_seconds(server: ServerProcess) -> None:
    key = server.register()
    cue = httpx.post(
        f"{server.base_url}/v1/cues",
        json={"name": "load", "transport": "worker", "payload": {"task": "load"}},
        headers={"Authorization": f"Bearer {key}"},
    )
    assert cue.status_code == 201, cue.text
    tally = Tally()
    started = time.monotonic()
    until = started + SECONDS
    threads = [
        threading.Thread(
            target=_client, args=(server.base_url, key, cue.json()["id"], me, until, tally)
        )
        for me in range(CLIENTS)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=SECONDS + 120)
    elapsed = time.monotonic() - started
    assert not any(t.is_alive() for t in threads), "a client did not finish"
    _drain(server.base_url, key, tally)

    assert tally.errors == [], tally.errors[:10]
    double = {eid: n for eid, n in tally.claims.items() if n > 1}
    assert double == {}, f"{len(double)} executions claimed twice"
    assert set(tally.claims) == tally.fired == tally.settled  # 0 lost, all settled
    listing = httpx.get(
        f"{server.base_url}/v1/executions",
        params={"status": "success", "limit": 1},
        headers={"Authorization": f"Bearer {key}"},
    ).json()
    assert listing["total"] == len(tally.fired)
    print(
        f"\n{CLIENTS} clients, {elapsed:.0f}s: {len(tally.fired)} messages fired, claimed and "
        f"settled, {tally.requests} requests ({tally.requests / elapsed:.0f}/s), "
        f"0 errors, 0 double claims, 0 lost"
    )
