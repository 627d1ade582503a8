"""Processes the benchmark starts: `cuemsg serve` servers and client role processes.

Servers run as `python -m cuemsg serve` subprocesses (one process each, on a
loopback port). Client roles (`bench.roles`) run in processes made by a
multiprocessing forkserver, so no client ever shares a CPU-bound interpreter
with the server it measures, and starting sixteen of them stays cheap.

A role run goes: every process sets up (opens its mailbox, connects), says
ready, and waits; the parent reads the servers' `/health` counters; then it
releases all of them at once and collects their results. Every wait here has
a deadline: a role that hangs is killed and reported, never waited on for ever.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import queue
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil

from cuemsg.testing import free_port

HOST = "127.0.0.1"
PG_DSN = os.environ.get("CUEMSG_BENCH_POSTGRES_DSN", "postgresql://127.0.0.1:5432/test")


# -- servers ------------------------------------------------------------------------------


def server_requests(base_url: str) -> int:
    """Requests the server at `base_url` answered so far (`/health`), not counting this call."""
    answer = httpx.get(f"{base_url}/health", timeout=10)
    answer.raise_for_status()
    return int(answer.json()["requests"]) - 1


@dataclass
class ServerProc:
    """One running `cuemsg serve` process."""

    base_url: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    label: str
    api_key: str = ""
    _peak_sampled: int = 0

    @property
    def pid(self) -> int:
        return self.popen.pid

    def requests(self) -> int:
        """Requests answered so far (`/health`), not counting this `/health` call."""
        return server_requests(self.base_url)

    def register(self, email: str = "bench@localhost") -> str:
        """A new tenant's API key (`POST /v1/auth/register`)."""
        answer = httpx.post(f"{self.base_url}/v1/auth/register", json={"email": email}, timeout=10)
        answer.raise_for_status()
        return str(answer.json()["api_key"])

    def cpu_seconds(self) -> float:
        """CPU time (user + system) the server process has used so far."""
        try:
            times = psutil.Process(self.pid).cpu_times()
        except psutil.Error:
            return 0.0
        return float(times.user + times.system)

    def sample_rss(self) -> None:
        """Remember the largest RSS seen so far (the fallback where VmHWM is missing)."""
        with contextlib.suppress(psutil.Error):
            self._peak_sampled = max(self._peak_sampled, psutil.Process(self.pid).memory_info().rss)

    def peak_rss(self) -> int:
        """Peak resident set size in bytes: the kernel's high-water mark where it has one."""
        self.sample_rss()
        return max(self._peak_sampled, vm_hwm(self.pid))

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def vm_hwm(pid: int) -> int:
    """`VmHWM` (peak RSS) of a process from /proc, in bytes; 0 where unavailable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def start_server(
    db: str,
    *,
    label: str,
    extensions: bool = True,
    workdir: Path,
    key: str | None = None,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
) -> ServerProc:
    """Start `cuemsg serve --db DB` on a free loopback port and wait until it answers.

    Args:
        db: a SQLite path or a `postgresql://` URL.
        label: a short name for logs and errors.
        extensions: False starts it with `--no-extensions` (the plain CueAPI contract).
        workdir: where its log file goes.
        key: an API key to use (a replica on a database that already has it);
            default: register a new tenant.
        args: more `cuemsg serve` options.
        env: more environment variables for the server (`CUEMSG_*` settings).
    """
    port = free_port(HOST)
    log_path = workdir / f"server-{label}-{port}.log"
    cmd = [sys.executable, "-m", "cuemsg", "serve", "--db", db, "--host", HOST, "--port", str(port)]
    if not extensions:
        cmd.append("--no-extensions")
    cmd += args
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CUEMSG_", "CUEAPI_"))}
    with open(log_path, "wb") as log:
        popen = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, env={**clean, **(env or {})}
        )
    server = ServerProc(f"http://{HOST}:{port}", popen, log_path, label)
    deadline = time.monotonic() + 30
    while True:
        if popen.poll() is not None:
            raise RuntimeError(f"server {label} exited: {log_path.read_text()[-2000:]}")
        try:
            server.requests()
            break
        except (httpx.HTTPError, ValueError) as exc:
            if time.monotonic() > deadline:
                server.stop()
                tail = log_path.read_text()[-2000:]
                raise RuntimeError(f"server {label} did not start: {tail}") from exc
            time.sleep(0.05)
    server.api_key = key or server.register()
    return server


@contextlib.contextmanager
def workdir() -> Iterator[Path]:
    """A temporary directory for databases and logs, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix="cuemsg-bench-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def servers(*starts: Callable[[], ServerProc]) -> Iterator[list[ServerProc]]:
    """Start servers in order and stop them all on exit."""
    running: list[ServerProc] = []
    try:
        for start in starts:
            running.append(start())
        yield running
    finally:
        for server in running:
            server.stop()


# -- PostgreSQL ---------------------------------------------------------------------------


def postgres_problem() -> str | None:
    """Why PostgreSQL cannot be used (no psycopg, no server, no backend), or None."""
    try:
        import psycopg
    except ImportError:
        return "psycopg not installed"
    try:
        import cuemsg.server.storage.postgres  # noqa: F401
    except ImportError as exc:
        return f"PostgreSQL backend not available ({exc})"
    try:
        with psycopg.connect(PG_DSN, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except Exception as exc:
        return f"PostgreSQL at {PG_DSN} unreachable: {type(exc).__name__}"
    return None


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A `postgresql://` URL on a fresh schema of the bench database, dropped afterwards."""
    import psycopg

    schema = f"cuemsg_bench_{secrets.token_hex(4)}"
    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    sep = "&" if "?" in PG_DSN else "?"
    try:
        yield f"{PG_DSN}{sep}options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


# -- client role processes ----------------------------------------------------------------


@dataclass
class Role:
    """A function of `bench.roles` (or `bench.peers`) to run in its own process."""

    func: Callable[..., dict[str, Any]]
    kwargs: dict[str, Any] = field(default_factory=dict)
    name: str = ""


class RoleContext:
    """What a role process gets: `ready()` to sync the start, `stop` to end open loops."""

    def __init__(self, ready_q: Any, go: Any, stop: Any, index: int) -> None:
        self._ready_q = ready_q
        self._go = go
        self.stop = stop
        self.index = index
        self.cpu_start = time.process_time()

    def ready(self, timeout: float = 120.0, *, block: bool = True) -> None:
        """Tell the parent that set-up is done; block until every role may start.

        A server role (a responder that others warm up against) passes
        `block=False` and starts serving at once.
        """
        self._ready_q.put(("ready", self.index, os.getpid()))
        if block and not self._go.wait(timeout):
            raise TimeoutError("the parent never said go")
        self.cpu_start = time.process_time()  # CPU of this process counts from here


def _entry(
    func: Callable[..., dict[str, Any]],
    kwargs: dict[str, Any],
    ready_q: Any,
    go: Any,
    stop: Any,
    results: Any,
    index: int,
) -> None:
    ctx = RoleContext(ready_q, go, stop, index)
    try:
        result = func(ctx, **kwargs)
    except BaseException:
        result = {"error": traceback.format_exc()}
        ready_q.put(("failed", index, os.getpid()))
    import resource

    result.setdefault("cpu", time.process_time() - ctx.cpu_start)
    result.setdefault("peak_rss", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    results.put((index, result))


_MP: Any = None


def _mp() -> Any:
    """The forkserver context, preloaded with the client libraries (made once)."""
    global _MP
    if _MP is None:
        _MP = mp.get_context("forkserver")
        _MP.set_forkserver_preload(["bench.roles", "bench.peers", "httpx", "cuemsg.cueapi"])
    return _MP


class RoleFailed(RuntimeError):
    """A role process raised, hung, or died."""


def run_roles(
    roles: Sequence[Role],
    *,
    timeout: float,
    before_go: Callable[[], None] | None = None,
    stop_after: Sequence[int] | None = None,
    samplers: Sequence[ServerProc] = (),
) -> list[dict[str, Any]]:
    """Run roles in processes: wait for all to be ready, call `before_go`, release them.

    Args:
        roles: what to run.
        timeout: seconds for the whole run after go; roles still running then are killed.
        before_go: called when all roles are ready (e.g. to read server counters).
        stop_after: indexes of roles that finish on their own; when they have
            all reported, the `stop` event is set for the others (e.g. a responder).
        samplers: servers whose RSS to sample while the roles run.

    Returns:
        One result dict per role, in order.

    Raises:
        RoleFailed: a role raised (its traceback is in the message), hung or died.
    """
    ctx = _mp()
    ready_q, results_q = ctx.Queue(), ctx.Queue()
    go, stop = ctx.Event(), ctx.Event()
    procs = [
        ctx.Process(
            target=_entry,
            args=(r.func, r.kwargs, ready_q, go, stop, results_q, i),
            name=r.name or r.func.__name__,
            daemon=True,
        )
        for i, r in enumerate(roles)
    ]
    results: dict[int, dict[str, Any]] = {}
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.2):
            for server in samplers:
                server.sample_rss()

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        for proc in procs:
            proc.start()
        waiting = set(range(len(roles)))
        deadline = time.monotonic() + 60
        while waiting:
            try:
                kind, index, _pid = ready_q.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                raise RoleFailed(f"roles {sorted(waiting)} were not ready in time") from None
            waiting.discard(index)
            if kind == "failed":
                go.set()  # let the others run out; we only want the error
        if before_go is not None:
            before_go()
        go.set()
        finishers = set(stop_after) if stop_after is not None else None
        deadline = time.monotonic() + timeout
        while len(results) < len(roles):
            left = deadline - time.monotonic()
            if left <= 0:
                raise RoleFailed(
                    f"roles {sorted(set(range(len(roles))) - set(results))} ran over {timeout} s"
                )
            try:
                index, result = results_q.get(timeout=min(left, 1.0))
            except queue.Empty:
                dead = [i for i, p in enumerate(procs) if i not in results and p.exitcode]
                if dead:
                    raise RoleFailed(f"role processes {dead} died") from None
                continue
            results[index] = result
            if "error" in result:
                break
            if finishers is not None and finishers <= set(results):
                stop.set()
        if len(results) == len(roles):
            for proc in procs:
                proc.join(timeout=10)
    finally:
        stop.set()
        go.set()
        sampling.set()
        for proc in procs:
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)
    errors = [f"{roles[i].func.__name__}: {r['error']}" for i, r in results.items() if "error" in r]
    if errors:
        raise RoleFailed("\n".join(errors))
    if len(results) < len(roles):
        raise RoleFailed("some roles gave no result")
    return [results[i] for i in range(len(roles))]


# -- the machine --------------------------------------------------------------------------


def machine() -> dict[str, str]:
    """CPU model, cores, memory, Python, OS and the server's HTTP path, for the report's header."""
    cpu = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = psutil.virtual_memory().total / 2**30
    import platform

    return {
        "cpu": cpu,
        "cores": str(os.cpu_count() or 1),
        "memory": f"{mem:.1f} GiB",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "os": f"{platform.system()} {platform.release()}",
        "http": http_path(),
    }


def http_path() -> str:
    """Which HTTP protocol `cuemsg serve` runs with the installed uvicorn: `HotProtocol`
    only with a release it was tested with, else uvicorn's own (slower) one."""
    import uvicorn

    from cuemsg.server.protocol import hot_protocol_fits

    fast = "HotProtocol" if hot_protocol_fits() else "uvicorn's own protocol (HotProtocol off)"
    return f"uvicorn {uvicorn.__version__}, {fast}"
