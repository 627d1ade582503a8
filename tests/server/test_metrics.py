"""`GET /metrics`: Prometheus text with what operators look for, off beyond
loopback unless asked for (`cuemsg serve --metrics`)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from cuemsg.testing import RunningServer, free_port, run_server
from tests.server.conftest import Api


def samples(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    answer = httpx.get(f"{base_url}/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(answer.text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def until(base_url: str, name: str, **labels: str) -> None:
    """Wait (up to 30 s: the sweeper runs late on a loaded machine) for a count."""
    deadline = time.monotonic() + 30
    while value(samples(base_url), name, **labels) < 1:
        assert time.monotonic() < deadline, f"{name} {labels} never counted"
        time.sleep(0.05)


def test_a_claim_a_fire_made_for_a_parked_claim_is_counted() -> None:
    # SQLite: the fire claims for the parked claim in its own transaction; the
    # claim is counted all the same.
    with run_server() as srv:
        api = Api(srv.base_url, srv.new_key())
        try:
            cue = api.cue(name="inbox", payload={"task": "inbox"})
            got: list[httpx.Response] = []
            parked = threading.Thread(
                target=lambda: got.append(api.claim("w", task="inbox", wait=5))
            )
            parked.start()
            deadline = time.monotonic() + 5
            while value(samples(srv.base_url), "cuemsg_long_polls_parked") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.01)
            eid = api.fire(cue["id"])["id"]
            parked.join(10)
            assert got[0].json()["execution_id"] == eid
            assert value(samples(srv.base_url), "cuemsg_claims_total") == 1
            assert httpx.get(f"{srv.base_url}/health").json()["handed_claims"] == 1
        finally:
            api.close()


def test_outcomes_recorded_with_a_hand_over_are_counted() -> None:
    # SQLite: a parked claim's outcome rides on the fire that hands it work; it is
    # counted as an outcome all the same (once: the scrape adds what is new).
    with run_server() as srv:
        api = Api(srv.base_url, srv.new_key())
        try:
            cue = api.cue(name="inbox", payload={"task": "inbox"})
            first = api.fire(cue["id"])["id"]
            assert api.claim("w", task="inbox").json()["execution_id"] == first
            got: list[httpx.Response] = []
            settle = [{"execution_id": first, "success": True}]
            parked = threading.Thread(
                target=lambda: got.append(api.claim("w", task="inbox", wait=5, settle=settle))
            )
            parked.start()
            deadline = time.monotonic() + 5
            while value(samples(srv.base_url), "cuemsg_long_polls_parked") < 1:
                assert time.monotonic() < deadline
                time.sleep(0.001)
            api.fire(cue["id"])
            parked.join(10)
            assert got[0].json()["settled"][0]["outcome_state"] == "success"
            assert value(samples(srv.base_url), "cuemsg_outcomes_total", kind="success") == 1
            assert value(samples(srv.base_url), "cuemsg_outcomes_total", kind="success") == 1
        finally:
            api.close()


def test_metrics_count_the_hand_offs() -> None:
    # A server of its own: the counters are this test's alone.
    # The unclaimed timeout is long enough for the first checks on a loaded machine.
    with run_server(lease_seconds=0.2, sweep_interval=0.05, unclaimed_timeout=3.0) as srv:
        api = Api(srv.base_url, srv.new_key())
        try:
            cue = api.cue(name="inbox", payload={"task": "inbox"})
            for _ in range(3):
                api.fire(cue["id"])
            ok = api.claim("w", task="inbox").json()["execution_id"]
            api.http.post(
                f"/v1/executions/{ok}/outcome", json={"success": True}, headers={"X-Worker-Id": "w"}
            )
            bad = api.claim("w", task="inbox").json()["execution_id"]
            api.http.post(
                f"/v1/executions/{bad}/outcome",
                json={"success": False, "error": "no"},
                headers={"X-Worker-Id": "w"},
            )
            found = samples(srv.base_url)
            assert value(found, "cuemsg_fires_total") == 3
            assert value(found, "cuemsg_claims_total") == 2
            assert value(found, "cuemsg_outcomes_total", kind="success") == 1
            assert value(found, "cuemsg_outcomes_total", kind="failure") == 1
            waiting = value(found, "cuemsg_waiting_executions", cue_id=cue["id"], mailbox="inbox")
            assert waiting == 1
            route = "/v1/executions/{execution_id}/outcome"
            assert (
                value(found, "cuemsg_http_requests_total", route=route, method="POST", status="200")
                == 2
            )
            assert (
                value(
                    found,
                    "cuemsg_http_requests_total",
                    route="/v1/cues",
                    method="POST",
                    status="201",
                )
                == 1
            )
            assert value(found, "cuemsg_storage_seconds_count", op="fire") == 3
            assert value(found, "cuemsg_long_polls_parked") == 0
            # A lease that runs out: back to waiting.
            api.claim("w", task="inbox")
            until(srv.base_url, "cuemsg_sweeps_total", what="lease_expired")
            found = samples(srv.base_url)
            assert value(found, "cuemsg_waiting_executions", cue_id=cue["id"], mailbox="inbox") == 1
            # A message nobody claims within the unclaimed timeout: missed (the one
            # claimed before stays, so one still waits).
            api.fire(cue["id"])
            until(srv.base_url, "cuemsg_sweeps_total", what="missed")
            found = samples(srv.base_url)
            assert value(found, "cuemsg_sweeps_total", what="lease_expired") == 1
            assert value(found, "cuemsg_waiting_executions", cue_id=cue["id"], mailbox="inbox") == 1
        finally:
            api.close()


def test_a_parked_long_poll_shows(api_on: Callable[..., Api]) -> None:
    api = api_on()
    base = str(api.http.base_url).rstrip("/")
    parked = []
    thread = threading.Thread(
        target=lambda: parked.append(api.claim("w", task="nothing-ever", wait=2)), daemon=True
    )
    thread.start()
    deadline = time.monotonic() + 5
    while value(samples(base), "cuemsg_long_polls_parked") < 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    thread.join(timeout=5)
    assert parked[0].status_code == 409


def test_metrics_can_be_turned_off(api_on: Callable[..., Api]) -> None:
    api = api_on(metrics=False)
    base = str(api.http.base_url).rstrip("/")
    assert httpx.get(f"{base}/metrics").status_code == 404


def _serve(*flags: str) -> tuple[int, subprocess.Popen[str]]:
    port = free_port("0.0.0.0")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cuemsg",
            "serve",
            "--db",
            ":memory:",
            "--host",
            "0.0.0.0",
            "--port",
            str(port),
            *flags,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    deadline = time.monotonic() + 15
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return port, proc
        except httpx.TransportError:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline
            time.sleep(0.05)


def test_beyond_loopback_metrics_need_the_flag() -> None:
    port, proc = _serve()
    try:
        assert httpx.get(f"http://127.0.0.1:{port}/metrics").status_code == 404
    finally:
        proc.terminate()
        proc.communicate(timeout=15)
    port, proc = _serve("--metrics")
    try:
        answer = httpx.get(f"http://127.0.0.1:{port}/metrics")
        assert answer.status_code == 200 and "cuemsg_fires_total" in answer.text
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=15)
    assert f"metrics: http://0.0.0.0:{port}/metrics" in out


def test_loopback_serves_metrics_by_default(srv: RunningServer) -> None:
    assert "cuemsg_http_requests_total" in httpx.get(f"{srv.base_url}/metrics").text


def test_storage_timings_render_as_a_prometheus_histogram_does() -> None:
    import re

    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from cuemsg.server.metrics import _BUCKETS, Timings

    theirs, ours = CollectorRegistry(auto_describe=True), CollectorRegistry(auto_describe=True)
    histogram = Histogram(
        "cuemsg_storage_seconds", "storage call latency", ["op"], buckets=_BUCKETS, registry=theirs
    )
    timings = Timings(ours, _BUCKETS)
    assert generate_latest(ours) == generate_latest(theirs)  # nothing timed yet
    for op in ("fire", "claim_next"):
        counts = timings.of(op)
        for seconds in (0.0001, 0.0005, 0.0006, 0.001, 0.003, 2.5, 3.0):  # bounds included
            histogram.labels(op).observe(seconds)
            timings.observe(counts, seconds)

    def text(registry: CollectorRegistry) -> str:  # creation times differ by microseconds
        return re.sub(r"(_created\{.*\}) .*", r"\1", generate_latest(registry).decode())

    assert text(ours) == text(theirs)
