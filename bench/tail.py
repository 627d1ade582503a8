"""Rows 2j and 2k: what the event feed costs the message path.

The one-way case of row 2b (one pair, send -> receive -> ack), run without a
tail (2j) and with a `cuemsg tail --json` process following the same tenant
(2k), interleaved round by round on the same server so a passing load hits
both alike. Ratio T10 is 2j / 2k: how much slower messages go while a tail
watches (the target: under 10 %, so T10 <= 1.11). `python -m bench --only tail`
runs just these two rows.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

from bench import rows
from bench.drivers import driver_label
from bench.procs import ServerProc
from bench.report import Row
from bench.rows import Plan

CASE = "one-way send -> receive -> ack, 1 pair"


@contextlib.contextmanager
def tail_attached(server: ServerProc) -> Iterator[subprocess.Popen[bytes]]:
    """A `cuemsg tail --json` subprocess on the server's tenant, following live."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CUEMSG_", "CUEAPI_"))}
    env.update(CUEAPI_API_KEY=server.api_key, CUEAPI_BASE_URL=server.base_url)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuemsg", "tail", "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()  # "cuemsg tail: ..., after event N": it follows
        if not line.startswith(b"cuemsg tail:"):
            raise RuntimeError(f"cuemsg tail did not start: {line!r}")
        yield proc
    finally:
        proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        if proc.stderr is not None:
            proc.stderr.close()


def tail_rows(plan: Plan, server: ServerProc, kind: str, log: Callable[[str], None]) -> list[Row]:
    """Rows 2j (no tail) and 2k (a tail attached), `plan.rounds` interleaved runs each."""
    runs: dict[str, list[rows.OneWayRun]] = {"2j": [], "2k": []}
    # Four times row 2b's messages a run: the difference sought is small, the noise not.
    count = plan.one_pair * 4
    for round_ in range(plan.rounds):
        for key in ("2j", "2k"):
            started = time.monotonic()
            with tail_attached(server) if key == "2k" else contextlib.nullcontext():
                run = rows.one_way_run(
                    plan, [server], pairs=1, per_pair=count, kind=kind, prefix=f"ow-{key}"
                )
            runs[key].append(run)
            what = "tail" if key == "2k" else "none"
            log(
                f"  {key:>3} round {round_ + 1}/{plan.rounds} {what:<5}"
                f" {run.rate:7.1f} msg/s {time.monotonic() - started:5.1f} s"
            )
    label = driver_label(kind)
    return [
        rows.one_way_row("2j", f"{CASE}, no tail (paired with 2k)", runs["2j"], label),
        rows.one_way_row(
            "2k", f"{CASE}, a `cuemsg tail` attached", runs["2k"], label + "; tail --json"
        ),
    ]
