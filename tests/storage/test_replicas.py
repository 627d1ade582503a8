"""Two `cuemsg serve` processes on one PostgreSQL schema, over real HTTP.

Each replica is its own process (as in production), so a SIGKILL is a real
crash. A key registered on one replica is valid on the other: tenants live in
the database.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cuemsg.testing import free_port

pytestmark = [pytest.mark.postgres, pytest.mark.slow]


class Replica:
    """One `cuemsg serve --db <url>` subprocess."""

    def __init__(self, db: str, log: Path, *, lease_seconds: float = 60.0) -> None:
        self.db = db
        self.log_path = log
        self.lease_seconds = lease_seconds
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Replica:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEMSG_", "CUEAPI_"))}
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "cuemsg",
                    "serve",
                    "--db",
                    self.db,
                    "--port",
                    str(self.port),
                    "--lease-seconds",
                    str(self.lease_seconds),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
            )
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"replica exited: {self.log_path.read_text()}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"replica not ready in {timeout}s: {self.log_path.read_text()}")

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base_url}/health", timeout=5).json())

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def replicas(
    postgres_url: Callable[[], str], tmp_path: Path
) -> Iterator[Callable[..., list[Replica]]]:
    """Factory: `replicas(n, lease_seconds=...)` starts n replicas on one fresh schema
    (later calls in the same test reuse that schema)."""
    url = postgres_url()
    started: list[Replica] = []

    def make(n: int = 2, **kw: Any) -> list[Replica]:
        made = [
            Replica(url, tmp_path / f"replica{len(started) + i}.log", **kw).start()
            for i in range(n)
        ]
        started.extend(made)
        for r in made:
            r.wait_ready()
        return made

    yield make
    for r in started:
        r.stop()


def register(base_url: str) -> str:
    answer = httpx.post(f"{base_url}/v1/auth/register", json={"email": "r@example.com"})
    assert answer.status_code == 201, answer.text
    return str(answer.json()["api_key"])


def client(base_url: str, key: str) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers={"Authorization": f"Bearer {key}"}, timeout=30)


def make_cue(http: httpx.Client, task: str) -> str:
    answer = http.post(
        "/v1/cues",
        json={"name": f"mailbox-{task}", "transport": "worker", "payload": {"task": task}},
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


@pytest.mark.timeout(420)
def test_every_message_delivered_exactly_once_across_replicas(
    replicas: Callable[..., list[Replica]],
) -> None:
    a, b = replicas(2)
    key = register(a.base_url)
    with client(b.base_url, key) as http:
        cue = make_cue(http, "bulk")
    total, senders, receivers = 2000, 2, 8
    fired: dict[str, int] = {}
    received: list[tuple[str, int, str]] = []
    lock = threading.Lock()
    done = threading.Event()
    errors: list[str] = []

    def send(s: int) -> None:
        with client((a, b)[s % 2].base_url, key) as http:
            for n in range(s, total, senders):
                answer = http.post(f"/v1/cues/{cue}/fire", json={"payload_override": {"n": n}})
                if answer.status_code != 200:
                    errors.append(answer.text)
                    return
                with lock:
                    fired[answer.json()["id"]] = n

    def receive(r: int) -> None:
        worker = f"receiver-{r}"
        replica = (a, b)[r % 2]
        with client(replica.base_url, key) as http:
            while not done.is_set():
                answer = http.post(
                    "/v1/executions/claim", json={"worker_id": worker, "task": "bulk", "wait": 1}
                )
                if answer.status_code == 409:
                    continue
                if answer.status_code != 200:
                    errors.append(answer.text)
                    return
                claim = answer.json()
                ack = http.post(
                    f"/v1/executions/{claim['execution_id']}/outcome",
                    headers={"X-Worker-Id": worker},
                    json={"success": True},
                )
                if ack.status_code != 200:
                    errors.append(ack.text)
                    return
                with lock:
                    received.append(
                        (claim["execution_id"], claim["payload"]["n"], replica.base_url)
                    )
                    if len(received) >= total:
                        done.set()

    threads = [threading.Thread(target=receive, args=(r,)) for r in range(receivers)]
    threads += [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    started = time.monotonic()
    for t in threads:
        t.start()
    done.wait(300)  # a hang guard: a loaded 2-core machine took 110 s
    elapsed = time.monotonic() - started
    done.set()
    for t in threads:
        t.join(10)
    assert not errors, errors[:3]
    ids = [r[0] for r in received]
    assert len(ids) == len(set(ids)), "an execution was delivered twice"
    assert set(ids) == set(fired) and len(fired) == total
    assert sorted(r[1] for r in received) == list(range(total))
    per_replica = {url: sum(1 for r in received if r[2] == url) for url in (a.base_url, b.base_url)}
    assert all(per_replica.values()), per_replica  # both replicas delivered
    print(
        f"\n{total} messages, {senders} senders, {receivers} receivers on 2 replicas: "
        f"{elapsed:.2f} s, {total / elapsed:.0f} messages/s; per replica {per_replica}"
    )
    with client(a.base_url, key) as http:
        listing = http.get("/v1/executions", params={"status": "success", "limit": 1}).json()
    assert listing["total"] == total


def test_a_fire_on_one_replica_wakes_a_claim_waiting_on_the_other(
    replicas: Callable[..., list[Replica]],
) -> None:
    a, b = replicas(2)
    key = register(b.base_url)
    with client(a.base_url, key) as on_a, client(b.base_url, key) as on_b:
        cue = make_cue(on_a, "wake")
        for _ in range(3):
            result: dict[str, Any] = {}

            def wait_on_b(result: dict[str, Any]) -> None:
                answer = on_b.post(
                    "/v1/executions/claim", json={"worker_id": "w", "task": "wake", "wait": 10}
                )
                result["answer"], result["at"] = answer, time.monotonic()

            waiter = threading.Thread(target=wait_on_b, args=(result,))
            waiter.start()
            deadline = time.monotonic() + 5
            while b.health()["waiting_claims"] < 1:
                assert time.monotonic() < deadline, "the claim never parked on replica B"
                time.sleep(0.005)
            fired_at = time.monotonic()
            eid = on_a.post(f"/v1/cues/{cue}/fire", json={}).json()["id"]
            waiter.join(15)
            answer = result["answer"]
            assert answer.status_code == 200, answer.text
            assert answer.json()["execution_id"] == eid
            latency = result["at"] - fired_at
            print(f"\nfire on A -> claim on B answered in {latency * 1000:.1f} ms")
            assert latency < 2.0  # hang guard: it woke on the NOTIFY, not at the wait's end


def test_a_killed_replicas_claims_come_back_to_the_other(
    replicas: Callable[..., list[Replica]],
) -> None:
    a, b = replicas(2, lease_seconds=1)
    key = register(a.base_url)
    with client(a.base_url, key) as on_a:
        cue = make_cue(on_a, "crash")
        fired = [
            on_a.post(f"/v1/cues/{cue}/fire", json={"payload_override": {"n": n}}).json()["id"]
            for n in range(20)
        ]
        held = on_a.post(
            "/v1/executions/claim",
            json={"worker_id": "doomed", "task": "crash", "limit": 5},
        ).json()["executions"]
    assert len(held) == 5
    a.kill()
    got: dict[str, int] = {}
    started = time.monotonic()
    with client(b.base_url, key) as on_b:
        while len(got) < len(fired):
            assert time.monotonic() - started < 30, f"only {len(got)} came back"
            answer = on_b.post(
                "/v1/executions/claim", json={"worker_id": "survivor", "task": "crash", "wait": 5}
            )
            if answer.status_code == 409:
                continue
            assert answer.status_code == 200, answer.text
            claim = answer.json()
            assert claim["execution_id"] not in got
            got[claim["execution_id"]] = claim["attempts"]
            ack = on_b.post(
                f"/v1/executions/{claim['execution_id']}/outcome",
                headers={"X-Worker-Id": "survivor"},
                json={"success": True},
            )
            assert ack.status_code == 200, ack.text
    assert set(got) == set(fired)
    assert {e["execution_id"] for e in held} == {e for e, n in got.items() if n == 2}
    took = time.monotonic() - started
    print(f"\nall 20 delivered, the 5 held by the killed replica within {took:.2f} s")


def test_a_restart_of_every_replica_keeps_all_rows(
    replicas: Callable[..., list[Replica]],
) -> None:
    a, b = replicas(2)
    key = register(a.base_url)
    with client(a.base_url, key) as on_a, client(b.base_url, key) as on_b:
        cue = make_cue(on_a, "keep")
        fired = [
            (on_a, on_b)[n % 2]
            .post(
                f"/v1/cues/{cue}/fire",
                json={"payload_override": {"n": n}, "idempotency_key": f"m{n}"},
            )
            .json()["id"]
            for n in range(40)
        ]
        acked = []
        for _ in range(10):
            claim = on_b.post(
                "/v1/executions/claim", json={"worker_id": "w", "task": "keep"}
            ).json()
            on_a.post(
                f"/v1/executions/{claim['execution_id']}/outcome",
                headers={"X-Worker-Id": "w"},
                json={"success": True, "result": "ok"},
            )
            acked.append(claim["execution_id"])
        held = on_a.post("/v1/executions/claim", json={"worker_id": "w", "task": "keep"}).json()
    a.stop()
    b.stop()
    [c] = replicas(1)
    with client(c.base_url, key) as on_c:  # the key survived too
        page = on_c.get("/v1/executions", params={"limit": 100}).json()
        assert page["total"] == 40
        states = {e["id"]: e for e in page["executions"]}
        assert set(states) == set(fired)
        assert {e for e, r in states.items() if r["status"] == "success"} == set(acked)
        assert states[held["execution_id"]]["status"] == "delivering"
        assert sum(r["status"] == "pending" for r in states.values()) == 29
        # An idempotent retry of a fire from before the restart makes nothing new.
        again = on_c.post(
            f"/v1/cues/{cue}/fire", json={"payload_override": {"n": 7}, "idempotency_key": "m7"}
        )
        assert again.json()["id"] == fired[7]
        assert on_c.get(f"/v1/cues/{cue}").json()["fired_count"] == 40
