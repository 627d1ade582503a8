"""Who may use a server (issue 10, defect 7): registration as a setting and
rate-limited per client address, every key stored hashed (the development
key too), the Host guard of a loopback-bound server, and keys and tokens
redacted from every log line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest

from cuemsg import cli
from cuemsg.server.app import create_app, open_storage
from cuemsg.server.keys import create_dev_key, ensure_dev_key, hash_key
from cuemsg.server.redact import RedactSecrets, redact
from cuemsg.server.settings import ServerSettings
from cuemsg.testing import free_port, run_server
from tests.server.conftest import error_of

# -- registration ----------------------------------------------------------------------------


def test_registration_is_closed_by_default_beyond_loopback() -> None:
    assert ServerSettings().registration_open  # an in-process app: nothing is exposed
    assert ServerSettings(host="127.0.0.1").registration_open
    assert not ServerSettings(host="0.0.0.0").registration_open
    assert ServerSettings(host="0.0.0.0", registration="open").registration_open
    assert not ServerSettings(host="::1", registration="closed").registration_open
    with pytest.raises(ValueError, match="registration"):
        ServerSettings(registration="maybe")


def test_a_server_bound_beyond_loopback_refuses_registration() -> None:
    with run_server(host="0.0.0.0") as srv:
        answer = httpx.post(f"{srv.base_url}/v1/auth/register", json={"email": "a@example.com"})
        err = error_of(answer, 403, "registration_closed")
        assert "cuemsg keys create" in err["message"]
        # The key run_server made instead (as `cuemsg keys create` does) works.
        cues = httpx.get(
            f"{srv.base_url}/v1/cues", headers={"Authorization": f"Bearer {srv.api_key}"}
        )
        assert cues.status_code == 200


def test_closed_registration_on_loopback_too() -> None:
    with run_server(registration="closed") as srv:
        answer = httpx.post(f"{srv.base_url}/v1/auth/register", json={"email": "a@example.com"})
        error_of(answer, 403, "registration_closed")


def test_registration_is_rate_limited_per_client_address() -> None:
    # In-process with a chosen client address: loopback clients are not counted,
    # and a test cannot reach the server from a real non-loopback address.
    app = create_app(ServerSettings(db=":memory:", registration_rate=2))

    async def main() -> list[int]:
        statuses: list[int] = []
        async with app.router.lifespan_context(app):
            for address in ("203.0.113.5", "203.0.113.5", "203.0.113.5", "198.51.100.7"):
                transport = httpx.ASGITransport(app, client=(address, 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
                    answer = await c.post("/v1/auth/register", json={"email": "a@example.com"})
                    statuses.append(answer.status_code)
                    if answer.status_code == 429:
                        assert answer.json()["error"]["field"] == "registrations_per_minute"
                        assert answer.headers["Retry-After"]
        return statuses

    assert asyncio.run(main()) == [201, 201, 429, 201]


# -- keys stored hashed ----------------------------------------------------------------------


def _file_text(path: Path) -> bytes:
    return b"".join(p.read_bytes() for p in path.parent.iterdir() if p.name.startswith(path.name))


def test_the_dev_key_is_stored_hashed_and_shown_once(tmp_path: Path) -> None:
    db = tmp_path / "dev.db"

    async def main() -> tuple[str | None, str | None, str, str | None]:
        storage = open_storage(ServerSettings(db=str(db)))
        await storage.open()
        try:
            first = await ensure_dev_key(storage)
            again = await ensure_dev_key(storage)
            extra = await create_dev_key(storage)
            assert first is not None
            owner = await storage.tenant_for_key(hash_key(first))
            assert owner is not None and await storage.tenant_for_key(hash_key(extra)) == owner
            return first, again, extra, owner
        finally:
            await storage.close()

    first, again, extra, _ = asyncio.run(main())
    assert again is None  # never shown again
    assert first is not None and first != extra
    text = _file_text(db)
    assert first.encode() not in text and extra.encode() not in text
    assert hash_key(first).encode() in text


def test_a_plain_text_dev_key_of_an_older_version_is_erased(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    old_key = "cue_sk_" + "ab" * 16

    async def main() -> tuple[str | None, str | None, str | None]:
        storage = open_storage(ServerSettings(db=str(db)))
        await storage.open()
        try:  # what an older version left: the tenant, its key hash, the key in meta
            await storage.create_tenant("ten_old", "dev@localhost", hash_key(old_key), 1.0)
            await storage.set_meta("dev_api_key", old_key)
            shown = await ensure_dev_key(storage)
            return (
                shown,
                await ensure_dev_key(storage),
                await storage.tenant_for_key(hash_key(old_key)),
            )
        finally:
            await storage.close()

    shown, again, tenant = asyncio.run(main())
    assert (shown, again, tenant) == (old_key, None, "ten_old")
    with closing(sqlite3.connect(db)) as conn, conn:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    assert old_key not in meta.values() and meta["dev_tenant_id"] == "ten_old"


def test_keys_create_prints_a_working_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = str(tmp_path / "k.db")
    assert cli.main(["keys", "create", "--db", db]) == 0
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert key.startswith("cue_sk_")
    assert cli.main(["keys", "create", "--db", db]) == 0
    second = capsys.readouterr().out.strip().splitlines()[-1]
    assert second != key

    async def owners() -> set[str | None]:
        storage = open_storage(ServerSettings(db=db))
        await storage.open()
        try:
            return {await storage.tenant_for_key(hash_key(k)) for k in (key, second)}
        finally:
            await storage.close()

    [owner] = asyncio.run(owners())
    assert owner is not None


def test_keys_create_names_a_bad_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CUEMSG_QUOTA_PENDING", "lots")
    assert cli.main(["keys", "create", "--db", ":memory:"]) == 2
    assert "CUEMSG_QUOTA_PENDING" in capsys.readouterr().err


def test_keys_create_refuses_a_memory_database(capsys: pytest.CaptureFixture[str]) -> None:
    # It used to print a key for a database gone as soon as the command ended.
    assert cli.main(["keys", "create", "--db", ":memory:"]) == 2
    captured = capsys.readouterr()
    assert "cue_sk_" not in captured.out
    assert captured.err == (
        "cuemsg: keys: --db :memory: is a database of its own that ends with this command; "
        "give the file or URL that `cuemsg serve --db` uses\n"
    )


def _serve_banner(db: Path) -> str:
    """The lines `cuemsg serve` prints before serving (the process is then stopped)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "cuemsg", "serve", "--db", str(db), "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("registration:"):
                break
    finally:
        proc.terminate()
        proc.communicate(timeout=10)  # also closes the pipe
    return "".join(lines)


def test_serve_prints_the_dev_key_only_when_it_is_made(tmp_path: Path) -> None:
    db = tmp_path / "serve.db"
    first = _serve_banner(db)
    assert "shown once, stored hashed" in first and "cue_sk_" in first
    second = _serve_banner(db)
    assert "cue_sk_..." in second and "cuemsg keys create --db" in second
    key = first.split("stored hashed): ")[1].split()[0]
    assert key not in second
    assert key.encode() not in _file_text(db)


# -- the Host guard --------------------------------------------------------------------------


def test_a_loopback_server_refuses_other_host_names() -> None:
    with run_server() as srv:
        evil = httpx.get(f"{srv.base_url}/v1/info", headers={"Host": "evil.example"})
        err = error_of(evil, 421, "misdirected_request")
        assert "evil.example" in err["message"]
        rebound = httpx.get(
            f"{srv.base_url}/v1/cues",
            headers={"Host": f"evil.example:{srv.port}", "Authorization": f"Bearer {srv.api_key}"},
        )
        error_of(rebound, 421, "misdirected_request")
        for host in (f"127.0.0.1:{srv.port}", f"localhost:{srv.port}", "localhost", "[::1]"):
            assert httpx.get(f"{srv.base_url}/v1/info", headers={"Host": host}).status_code == 200


def test_the_host_check_remembers_only_allowed_values_and_only_so_many() -> None:
    from cuemsg.server.hosts import _PASSED_KEPT, HostCheck

    check = HostCheck("127.0.0.1")

    def scope(host: bytes | None) -> dict[str, object]:
        headers = [(b"accept", b"*/*")] + ([(b"host", host)] if host is not None else [])
        return {"type": "http", "headers": headers}

    for _ in range(2):  # the second time from what it remembered: the same verdicts
        assert check.refusal(scope(b"127.0.0.1:8787")) is None
        assert check.refusal(scope(b"LOCALHOST")) is None
        refused = check.refusal(scope(b"evil.example"))
        assert refused is not None and refused.status_code == 421
        missing = check.refusal(scope(None))
        assert missing is not None and b"(none)" in bytes(missing.body)
    for port in range(_PASSED_KEPT * 2):  # a client per port: what it keeps stays bounded
        assert check.refusal(scope(b"localhost:%d" % port)) is None
    assert len(check._passed) == _PASSED_KEPT
    assert check.refusal(scope(b"localhost:%d" % (_PASSED_KEPT * 2 - 1))) is None  # not kept


def test_the_host_name_of_a_header() -> None:
    from cuemsg.server.hosts import host_name

    assert host_name("[::1]:8787") == "::1"
    assert host_name("LocalHost:80") == "localhost"
    assert host_name("evil.example") == "evil.example"
    assert host_name("") == ""


# -- redaction -------------------------------------------------------------------------------


def test_redact_removes_keys_tokens_and_secret_query_values() -> None:
    line = (
        "GET /v1/cues?api_key=cue_sk_0123abcd&limit=5&token=t0k3n HTTP/1.1 "
        "Authorization: Bearer sekrit cue_sk_ffff0000"
    )
    clean = redact(line)
    for secret in ("0123abcd", "t0k3n", "sekrit", "ffff0000"):
        assert secret not in clean
    assert "limit=5" in clean and "api_key=***" in clean and "Bearer ***" in clean


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(self.format(record))


@contextlib.contextmanager
def access_lines() -> Iterator[_Lines]:
    """The access log's lines (attached after uvicorn configured its logging)."""
    handler = _Lines()
    logger = logging.getLogger("uvicorn.access")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


def test_the_access_log_never_shows_a_key() -> None:
    with run_server(access_log=True) as srv, access_lines() as lines:
        httpx.get(
            f"{srv.base_url}/v1/cues",
            params={"api_key": srv.api_key, "token": "hush", "limit": 3},
            headers={"Authorization": f"Bearer {srv.api_key}"},
        )
        httpx.get(f"{srv.base_url}/v1/info/{srv.api_key}")
    logged = "\n".join(lines.lines)
    assert "/v1/cues?api_key=***" in logged and "limit=3" in logged
    assert "/v1/info/cue_sk_***" in logged
    assert srv.api_key not in logged and "hush" not in logged


def test_every_server_log_record_is_cleaned() -> None:
    record = logging.LogRecord(
        "cuemsg.server", logging.ERROR, __file__, 1, "key %s in %r", ("cue_sk_abc", "x"), None
    )
    RedactSecrets().filter(record)
    assert record.getMessage() == "key cue_sk_*** in 'x'"
    named = logging.LogRecord(
        "cuemsg.server", logging.ERROR, __file__, 1, "%(k)s", ({"k": "Bearer abc"},), None
    )
    RedactSecrets().filter(named)
    assert named.getMessage() == "Bearer ***"
