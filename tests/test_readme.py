"""The README's code blocks, run in order against the embedded server, so the README cannot rot.

Python blocks run with this interpreter, bash blocks with `bash -euo pipefail`
(the venv's `cuemsg` first on PATH), each in one temporary directory, with
`CUEAPI_API_KEY` / `CUEAPI_BASE_URL` pointing at a fresh server over real HTTP.
A block right after a `<!-- readme-test: skip (why) -->` line is not run.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from cuemsg.testing import RunningServer, run_server

README = Path(__file__).resolve().parent.parent / "README.md"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)
SKIP = re.compile(r"^<!-- readme-test: skip \((.+)\) -->$")


@dataclass
class Block:
    language: str
    code: str
    line: int
    skip: str | None  # the reason given, when the block is not run


def blocks(text: str) -> list[Block]:
    """The fenced code blocks of `text`, with the skip reason of the line before each."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skipped = SKIP.match(before)
        line = text.count("\n", 0, match.start()) + 1
        found.append(
            Block(match.group(1), match.group(2), line, skipped.group(1) if skipped else None)
        )
    return found


def test_every_block_is_run_or_says_why_not() -> None:
    found = blocks(README.read_text())
    runnable = [b for b in found if b.skip is None]
    assert {b.language for b in runnable} <= {"python", "bash"}, runnable
    assert sum(b.language == "python" for b in runnable) >= 3
    assert sum(b.language == "bash" for b in runnable) >= 1
    # A marker must sit right before a fence: one left dangling would skip nothing.
    markers = [line for line in README.read_text().splitlines() if SKIP.match(line)]
    assert len(markers) == sum(b.skip is not None for b in found)


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server() as server:
        yield server


def test_the_readme_runs(srv: RunningServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEAPI_", "CUEMSG_"))}
    env.update(
        CUEAPI_API_KEY=srv.api_key,
        CUEAPI_BASE_URL=srv.base_url,
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
    )
    outputs = []
    for block in blocks(README.read_text()):
        if block.skip is not None:
            continue
        argv = (
            [sys.executable, "-c", block.code]
            if block.language == "python"
            else ["bash", "-euo", "pipefail", "-c", block.code]
        )
        done = subprocess.run(
            argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=90
        )
        assert done.returncode == 0, (
            f"README.md line {block.line} ({block.language}) exited {done.returncode}:\n"
            f"{done.stdout}\n{done.stderr}"
        )
        outputs.append(done.stdout)
    everything = "\n".join(outputs)
    assert "{'goal': 'draft the intro'}" in everything  # the quickstart's receive loop
    assert "{'words': 2}" in everything  # its RPC
    assert '"text": "agents talk"' in everything  # the CLI's echo agent answered
