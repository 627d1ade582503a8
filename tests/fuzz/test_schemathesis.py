"""Schemathesis over the whole OpenAPI document, on SQLite and on PostgreSQL.

A bounded, seeded run (`schemathesis run`, over real HTTP on loopback) of every
operation: the coverage phase (boundary and invalid values of every field), the
fuzzing phase (positive and negative data) and the stateful phase (following
the document's links: create cue -> fire -> claim -> heartbeat -> outcome),
with every check on (status codes, content types, response schemas, negative
data rejected, schema-valid data accepted, 405 with `Allow`, auth ignored, use
after delete). The run must end with 0 failures and 0 errors; its counts are
printed (docs/reliability.md records them).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cuemsg.server.settings import ServerSettings
from cuemsg.testing import run_server

#: Test cases per operation and phase; with the fixed seed the run is repeatable.
MAX_EXAMPLES = 60
SEED = 20261201
#: Operations left out of the run: an event stream never ends by itself
#: (tests/server/test_events.py covers GET /v1/events).
EXCLUDED_PATHS = ("/v1/events",)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]


def _schemathesis() -> list[str]:
    exe = shutil.which("schemathesis", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.fail("schemathesis is not installed: pip install 'cuemsg[test]'")
    return [exe]


def test_schemathesis_finds_nothing(db_url: str, tmp_path: Path) -> None:
    report = tmp_path / "report.json"
    # Where a webhook's host resolves decides whether the SSRF guard lets it
    # through, which no schema can say: the run allows every address.
    settings = ServerSettings(db=db_url, sweep_interval=0.05, webhook_allow=("0.0.0.0/0", "::/0"))
    with run_server(settings) as srv:
        env = {**os.environ, "SCHEMATHESIS_HOOKS": "tests.fuzz.hooks", "NO_COLOR": "1"}
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p
        )
        run = subprocess.run(
            [
                *_schemathesis(),
                "run",
                f"{srv.base_url}/openapi.json",
                "--header",
                f"Authorization: Bearer {srv.api_key}",
                "--checks",
                "all",
                "--mode",
                "all",
                "--max-examples",
                str(MAX_EXAMPLES),
                "--seed",
                str(SEED),
                "--workers",
                "1",
                "--request-timeout",
                "10",
                *(arg for path in EXCLUDED_PATHS for arg in ("--exclude-path", path)),
                "--report",
                "json",
                "--report-json-path",
                str(report),
            ],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=1100,
        )
    assert report.exists(), run.stdout[-5000:] + run.stderr[-2000:]
    result = json.loads(report.read_text())
    cases = result["test_cases"]
    print(
        f"schemathesis on {db_url.split('?')[0]}: {result['operations']['tested']} operations, "
        f"{cases['generated']} test cases, {cases['with_failures']} with failures, "
        f"{len(result['errors'])} errors, {result['running_time']:.0f} s"
    )
    operations = result["operations"]
    assert operations["tested"] == operations["total"] - len(EXCLUDED_PATHS) >= 20
    assert result["failures"] == [], run.stdout[-8000:]
    assert result["errors"] == [], run.stdout[-8000:]
    assert cases["errored"] == 0, run.stdout[-8000:]
    assert run.returncode == 0, run.stdout[-8000:]
