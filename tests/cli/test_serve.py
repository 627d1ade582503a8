"""`cuemsg serve` as a subprocess: binds before it prints, real ports, TLS, clear refusals."""

from __future__ import annotations

import signal
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.cli.conftest import run_cuemsg, subprocess_env


@pytest.fixture
def serving(tmp_path: Path) -> Iterator[list[subprocess.Popen[str]]]:
    """Started `cuemsg serve` processes, killed at the end if a test left them running."""
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()  # closes the pipes


def _serve(procs: list[subprocess.Popen[str]], *argv: str) -> tuple[str, list[str]]:
    """Start `cuemsg serve --port 0 --db :memory: ARGV`; answer its base URL and stdout lines."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuemsg", "serve", "--port", "0", "--db", ":memory:", *argv],
        env=subprocess_env(None),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    procs.append(proc)
    assert proc.stdout is not None
    lines = [proc.stdout.readline() for _ in range(5)]
    exports = [line.split("=", 1)[1].strip() for line in lines if "export CUEAPI_" in line]
    assert len(exports) == 2, lines
    return exports[0], lines


def test_port_0_prints_the_real_port_and_ctrl_c_exits_130(
    serving: list[subprocess.Popen[str]],
) -> None:
    base_url, lines = _serve(serving)
    port = int(base_url.rsplit(":", 1)[1])
    assert base_url == f"http://127.0.0.1:{port}" and port != 0
    assert lines[0].startswith("cuemsg ") and f"serving CueAPI on {base_url}" in lines[0]
    key = lines[4].split("=", 1)[1].strip()
    answer = httpx.get(f"{base_url}/v1/cues", headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    proc = serving[0]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert err == f"cuemsg: interrupted: the server on {base_url} stopped\n"


def test_a_port_in_use_is_one_line_and_exit_4() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        proc = run_cuemsg("serve", "--port", str(port), "--db", ":memory:", srv=None)
    assert (proc.returncode, proc.stdout) == (4, "")  # no key, no export lines
    assert proc.stderr == (
        f"cuemsg: serve: cannot listen on 127.0.0.1:{port}: address already in use "
        "(pick another --port, or --port 0 for a free one)\n"
    )


def test_a_port_out_of_range_is_a_usage_error() -> None:
    proc = run_cuemsg("serve", "--port", "99999", "--db", ":memory:", srv=None)
    assert (proc.returncode, proc.stdout) == (2, "")  # was an OverflowError traceback
    assert proc.stderr.endswith("\ncuemsg: serve: argument --port: must be 0 to 65535, not 99999\n")
    proc = run_cuemsg("serve", "--port", "http", "--db", ":memory:", srv=None)
    assert proc.returncode == 2
    assert proc.stderr.endswith("argument --port: not a port number: 'http'\n")


def test_a_host_that_is_not_this_machine_names_the_host() -> None:
    # 192.0.2.1 is TEST-NET-1 (RFC 5737): never an address of this machine.
    proc = run_cuemsg("serve", "--host", "192.0.2.1", "--port", "0", "--db", ":memory:", srv=None)
    assert (proc.returncode, proc.stdout) == (4, "")
    assert proc.stderr == (
        "cuemsg: serve: cannot listen on 192.0.2.1:0: "
        "no interface of this machine has that address (check --host)\n"
    )


def test_an_unknown_db_scheme_is_refused() -> None:
    proc = run_cuemsg("serve", "--db", "mysql://x", "--port", "0", srv=None)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr == (
        "cuemsg: --db mysql://x: unknown URL scheme 'mysql'; use a SQLite file path, "
        "sqlite:///path, :memory:, or a postgresql:// URL\n"
    )


def test_tls_files_must_load() -> None:
    proc = run_cuemsg("serve", "--port", "0", "--ssl-certfile", "/no/such.pem", srv=None)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr.startswith("cuemsg: cannot load the TLS certificate /no/such.pem: ")
    proc = run_cuemsg("serve", "--port", "0", "--ssl-keyfile", "key.pem", srv=None)
    assert (proc.returncode, proc.stderr) == (2, "cuemsg: --ssl-keyfile needs --ssl-certfile\n")


def test_https_with_a_self_signed_certificate(
    tmp_path: Path, serving: list[subprocess.Popen[str]]
) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
            "-addext", "subjectAltName=IP:127.0.0.1",
        ],
        check=True,
        capture_output=True,
    )  # fmt: skip
    base_url, _ = _serve(serving, "--ssl-certfile", str(cert), "--ssl-keyfile", str(key))
    assert base_url.startswith("https://127.0.0.1:")
    trust = ssl.create_default_context(cafile=str(cert))
    answer = httpx.get(f"{base_url}/v1/info", verify=trust)
    assert answer.status_code == 200
    assert "version" in answer.json()
    with pytest.raises(httpx.ConnectError):  # not trusted without the certificate
        httpx.get(f"{base_url}/v1/info")


def test_a_database_that_cannot_open_prints_no_key() -> None:
    pytest.importorskip("psycopg", reason="the PostgreSQL extra is not installed")
    db = "postgresql://127.0.0.1:1/nowhere"  # nothing listens on port 1
    proc = run_cuemsg("serve", "--port", "0", "--db", db, srv=None)
    assert (proc.returncode, proc.stdout) == (2, "")  # no key, no export lines
    [line] = proc.stderr.strip().splitlines()  # one line, not uvicorn's traceback
    assert line.startswith(f"cuemsg: serve: cannot open the database '{db}': "), line


def test_demo_tells_its_handler_failure_as_part_of_the_story() -> None:
    proc = run_cuemsg("demo", srv=None)
    assert proc.returncode == 0, proc.stderr
    assert (
        "  writer: its handler raised ValueError: the writer cannot do that "
        "(on purpose: cuemsg sends the planner an error reply)\n"
        "  planner: RemoteError ValueError: the writer cannot do that\n"
    ) in proc.stdout
    assert "WARNING" not in proc.stderr and "handler failed" not in proc.stderr


def test_serve_prints_where_the_web_console_is(serving: list[subprocess.Popen[str]]) -> None:
    base_url, _ = _serve(serving)
    proc = serving[0]
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == f"web console: {base_url}/console/ (sign in with the API key)"
    page = httpx.get(f"{base_url}/console/")
    assert page.status_code == 200 and "cuemsg console" in page.text
