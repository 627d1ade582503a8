"""The benchmark runs end to end (`python -m bench --quick`) and fills every row.

No time is asserted: only that each row is there, none failed, and each
ratio is a number unless a row it needs was skipped (no PostgreSQL, NATS,
RabbitMQ or Redis on this machine).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_bench_fills_every_row(tmp_path: Path) -> None:
    from bench.suite import ROW_KEYS

    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(tmp_path),
            "--json",
            str(tmp_path / "benchmarks.json"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    markdown = (tmp_path / "benchmarks.md").read_text()
    data = json.loads((tmp_path / "benchmarks.json").read_text())
    rows = {row["key"]: row for row in data["rows"]}

    assert set(rows) == set(ROW_KEYS)
    for key in ROW_KEYS:
        assert f"| {key} |" in markdown, f"row {key} is missing from the Markdown table"
    failed = {k: r["note"] for k, r in rows.items() if r["note"].startswith("failed")}
    assert not failed, failed
    skipped = {k for k, r in rows.items() if r["note"].startswith("skipped")}
    for key, row in rows.items():
        if key not in skipped and key != "2d":  # 2d repeats 2b until the Mailbox lands
            assert isinstance(row["value"], (int, float)), f"row {key} has no value"

    assert data["ratios"], "no ratios"
    for ratio in data["ratios"]:
        if set(ratio["sources"]) & skipped:
            continue
        assert isinstance(ratio["ratio"], (int, float)), f"ratio {ratio['key']} is not a number"
        assert ratio["result"] in ("pass", "miss", "info")
        assert f"| {ratio['key']} |" in markdown
    targets = [r for r in data["ratios"] if r["limit"] is not None]
    assert {r["key"] for r in targets} >= {
        "T1", "T2", "T3", "T4", "T5", "T6", "T9",
        "P1j", "P1r", "P2j", "P2r", "P2k", "P3j", "P3r", "P4",
    }  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_history_row_shows_a_flat_database(tmp_path: Path) -> None:
    """Row H alone: with retention the file stops growing (without it, it grows all run)."""
    from bench.rows import Plan, db_size

    row = db_size(Plan.make(True), tmp_path, key="H")
    sizes = row.extra["sizes_mib"]
    assert len(sizes) >= 8 and row.extra["messages"] > 0
    middle = sizes[len(sizes) // 2]
    # Without the purge the second half doubles the file; with it, WAL churn aside, it holds.
    assert sizes[-1] <= middle * 1.5, sizes
