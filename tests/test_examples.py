"""Each example runs as a script (a subprocess) and prints what it should."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from cuemsg.testing import run_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, env: dict[str, str] | None = None) -> str:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env={**clean, **(env or {})},
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


def test_ping_pong() -> None:
    out = run_example("ping_pong.py")
    for n in (1, 2, 3):
        assert f"bob   <- 'ping {n}' (thread rally)" in out
        assert f"alice <- 'pong {n}' from bob" in out
    assert out.count(" success  claimed by ") == 6
    assert "done: 3 rounds" in out


def test_rpc_service() -> None:
    out = run_example("rpc_service.py")
    assert "30 replies, 0 mismatched" in out
    per_worker = out.split("answered per worker:")[1].splitlines()[0]
    assert all(f"'pricer-{i}'" in per_worker for i in range(3))
    assert "remote error: KeyError: \"no price for 'durian'\"" in out


def test_pipeline() -> None:
    out = run_example("pipeline.py")
    assert "coordinator: got 'Tea is truly old. Tea is useful. Tea has fans.'" in out
    for stage in ("researcher", "writer", "editor"):
        assert f"  {stage:<10} request success" in out
    assert out.count(": replied, reply execution ") == 3


def test_hosted_starts_an_embedded_server_without_env() -> None:
    out = run_example("hosted.py")
    assert "no CUEAPI_API_KEY: using an embedded server" in out
    assert "helper got {'note': 'hello from the agent'}" in out
    assert "agent asked 2 + 3, helper answered 5" in out


@pytest.mark.parametrize("extensions", [False, True], ids=["plain", "ext"])
def test_hosted_follows_the_env_vars(extensions: bool) -> None:
    # A plain embedded server stands in for the hosted service (it lists no extensions).
    with run_server(db=":memory:", extensions=extensions) as srv:
        out = run_example(
            "hosted.py", {"CUEAPI_API_KEY": srv.new_key(), "CUEAPI_BASE_URL": srv.base_url}
        )
    assert f"using {srv.base_url}" in out
    assert ("none (plain)" in out) is not extensions
    assert "agent asked 2 + 3, helper answered 5" in out
    assert "record of the first message: success" in out
