"""The typed surface, as mypy sees it: `type=T` gives a T back, models are typed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).parent

EXPECTED = {
    20: "cuemsg.cueapi.models.FireResult",
    21: "cuemsg.cueapi.models.ClaimResult",
    22: "tests.typing.reveal.Total",
    23: "Any",
    25: "tests.typing.reveal.Order",
    29: "tests.typing.reveal.Order",
}


def test_reveal_types_under_mypy_strict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(HERE / "reveal.py")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=HERE.parents[1],
    )
    revealed = {
        int(m.group(1)): m.group(2)
        for m in re.finditer(r"reveal\.py:(\d+): note: Revealed type is \"([^\"]+)\"", done.stdout)
    }
    assert revealed == EXPECTED, done.stdout + done.stderr
    assert "error" not in done.stdout, done.stdout
