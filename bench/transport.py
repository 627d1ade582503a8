"""Client CPU per request of `CueClient`, by transport (a measuring script, not a test).

    .venv/bin/python -m bench.transport [--requests 2000] [--rounds 3]

Starts `cuemsg serve --db :memory:` in a subprocess (so the server's CPU never
counts), registers a key, creates a cue, then times `time.process_time()` of
this process around back-to-back requests, for each variant in turn, rounds
interleaved. Prints the median client CPU and wall time per request.

Variants (those the installed code does not have are skipped):
- `httpx`: `CueClient(http_client=httpx.Client(...))`: httpx's own pool,
  through `httpx.Client.send` (what `CueClient` did by default before
  `KeepAliveTransport`);
- `default`: `CueClient()` as shipped;
- `via-send`: `KeepAliveTransport` behind `httpx.Client.send` (no shortcut);
- `stdlib`: a bare keep-alive `http.client.HTTPConnection` (the floor).
"""

from __future__ import annotations

import argparse
import functools
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cuemsg.cueapi import CueClient

try:
    from cuemsg.cueapi._transport import KeepAliveTransport
except ImportError:  # the code before the transport existed
    KeepAliveTransport = None  # type: ignore[assignment,misc]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_server(port: int) -> subprocess.Popen[bytes]:
    exe = Path(sys.executable).with_name("cuemsg")
    cmd = [str(exe), "serve", "--db", ":memory:", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/health")
            if conn.getresponse().status == 200:
                conn.close()
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the server did not start")


def _register(port: int) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    body = json.dumps({"email": "bench@example.com"})
    conn.request("POST", "/v1/auth/register", body, {"Content-Type": "application/json"})
    key = str(json.loads(conn.getresponse().read())["api_key"])
    conn.close()
    return key


def _stdlib_get(port: int, key: str, cue_id: str) -> tuple[Callable[[], Any], Callable[[], None]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    headers = {"Authorization": f"Bearer {key}", "Accept": "application/json"}

    def get() -> Any:
        conn.request("GET", f"/v1/cues/{cue_id}", headers=headers)
        return json.loads(conn.getresponse().read())

    return get, conn.close


def _measure(op: Callable[[], Any], n: int) -> tuple[float, float]:
    """(client CPU us per request, wall us per request) over n calls."""
    for _ in range(min(200, n)):  # warm up: connections, caches
        op()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for _ in range(n):
        op()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    return cpu / n * 1e6, wall / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    port = _free_port()
    server = _start_server(port)
    try:
        key = _register(port)
        base = f"http://127.0.0.1:{port}"
        with CueClient(key, base, use_extensions=False) as setup:
            cue_id = setup.cues.create("bench", payload={"task": "bench"}).id

        def clients() -> dict[str, Callable[[], CueClient]]:
            made: dict[str, Callable[[], CueClient]] = {
                "httpx": lambda: CueClient(
                    key, base, use_extensions=False, http_client=httpx.Client(timeout=10.0)
                ),
                "default": lambda: CueClient(key, base, use_extensions=False),
            }
            if KeepAliveTransport is not None:
                made["via-send"] = lambda: CueClient(
                    key,
                    base,
                    use_extensions=False,
                    http_client=httpx.Client(transport=KeepAliveTransport(), timeout=10.0),
                )
            return made

        ops = {
            "get": lambda c: c.cues.get(cue_id),
            "fire": lambda c: c.cues.fire(cue_id, {"n": 1}),
        }
        results: dict[tuple[str, str], list[tuple[float, float]]] = {}
        for _ in range(args.rounds):
            for name, make in clients().items():
                client = make()
                for op_name, op in ops.items():
                    got = _measure(functools.partial(op, client), args.requests)
                    results.setdefault((name, op_name), []).append(got)
                http_client = client._http
                client.close()
                if name in ("httpx", "via-send"):
                    http_client.close()
            get, close = _stdlib_get(port, key, cue_id)
            results.setdefault(("stdlib", "get"), []).append(_measure(get, args.requests))
            close()

        print(
            f"# {args.requests} requests x {args.rounds} rounds, pid {os.getpid()}; "
            f"load average {os.getloadavg()[0]:.2f}"
        )
        print("| variant | op | client CPU us/req (median; range) | wall us/req (median) |")
        print("|---|---|---|---|")
        for (name, op_name), runs in results.items():
            cpus = [c for c, _ in runs]
            walls = [w for _, w in runs]
            print(
                f"| {name} | {op_name} | {statistics.median(cpus):,.0f} "
                f"({min(cpus):,.0f}-{max(cpus):,.0f}) | {statistics.median(walls):,.0f} |"
            )
    finally:
        server.terminate()
        server.wait(timeout=10)


if __name__ == "__main__":
    main()
