"""`cuemsg.webhook` (sign, verify), `cuemsg webhook verify`, the SSRF guard's
rules, the webhook settings' validation, and the dispatcher's fairness and
delivery-time refusal (on a real SQLite file, receivers on loopback)."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cueapi import verify_webhook

from cuemsg.cli import main
from cuemsg.server.settings import ServerSettings
from cuemsg.server.ssrf import Guard, UrlRefused
from cuemsg.server.storage.base import NewFire
from cuemsg.server.webhooks import Dispatcher, backoff_seconds
from cuemsg.webhook import canonical_body, sign, verify
from tests.localcue.receiver import receiver
from tests.storage.helpers import make_cue, opened, tenant

SECRET = "whsec_test"
BODY = {"payload": {"b": 1, "a": [1, 2]}, "execution_id": "e1", "attempt": 1}


def test_sign_and_verify_agree_with_the_official_sdk() -> None:
    now = time.time()
    stamp = str(int(now))
    signature = sign(SECRET, stamp, BODY)
    raw = canonical_body(BODY)
    assert raw == json.dumps(BODY, sort_keys=True).encode()
    assert signature.startswith("v1=") and len(signature) == 3 + 64
    # The same body however it was serialised: bytes, text, parsed.
    assert verify(raw, signature=signature, timestamp=stamp, secret=SECRET)
    assert verify(json.dumps(BODY), signature=signature, timestamp=stamp, secret=SECRET)
    assert verify(BODY, signature=signature, timestamp=stamp, secret=SECRET)
    assert verify_webhook(raw, signature, SECRET, stamp)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"secret": "whsec_other"}, False),
        ({"body": {**BODY, "attempt": 2}}, False),
        ({"timestamp": "not-a-number"}, False),
        ({"signature": "v1=" + "0" * 64}, False),
        ({"now_offset": 301}, False),
        ({"now_offset": 301, "tolerance": 0}, True),
        ({"now_offset": -299}, True),
    ],
)
def test_verify_refuses_what_it_should(change: dict[str, object], expected: bool) -> None:
    stamp = 1_767_225_600
    signature = sign(SECRET, stamp, BODY)
    now = stamp + float(change.pop("now_offset", 0))  # type: ignore[arg-type]
    args: dict[str, object] = {
        "body": BODY,
        "signature": signature,
        "timestamp": stamp,
        "secret": SECRET,
        "now": now,
        **change,
    }
    assert verify(**args) is expected  # type: ignore[arg-type]


def test_a_body_that_is_not_json_is_signed_as_it_is() -> None:
    assert canonical_body(b"\xffplain") == b"\xffplain"
    assert canonical_body("plain") == b"plain"
    signature = sign(SECRET, 5, "plain")
    assert verify(b"plain", signature=signature, timestamp=5, secret=SECRET, tolerance=0)


def test_the_cli_verifies_a_body(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stamp = str(int(time.time()))
    body = tmp_path / "body.json"
    body.write_bytes(canonical_body(BODY))
    good = ["webhook", "verify", "--secret", SECRET, "--timestamp", stamp, "--body", str(body)]
    assert main([*good, "--signature", sign(SECRET, stamp, BODY)]) == 0
    assert capsys.readouterr().out == "signature valid\n"
    assert main([*good, "--signature", "v1=00"]) == 1
    assert "signature invalid" in capsys.readouterr().err
    missing = ["webhook", "verify", "--signature", "v1=00", "--timestamp", stamp]
    assert main([*missing, "--body", str(tmp_path / "nope.json"), "--secret", SECRET]) == 2
    assert "cannot read" in capsys.readouterr().err
    assert main([*missing, "--body", str(body)]) == 2
    assert "no secret" in capsys.readouterr().err


def test_the_cli_reads_the_body_and_secret_from_stdin_and_env() -> None:
    stamp = str(int(time.time()))
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "cuemsg",
            "webhook",
            "verify",
            "--timestamp",
            stamp,
            "--signature",
            sign(SECRET, stamp, BODY),
        ],
        input=canonical_body(BODY),
        capture_output=True,
        env={
            "CUEAPI_WEBHOOK_SECRET": SECRET,
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        },
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"signature valid\n"


@pytest.mark.parametrize(
    ("address", "loopback_ok", "allow", "refused"),
    [
        ("93.184.216.34", False, (), None),
        ("2606:4700::1111", False, (), None),
        ("127.0.0.1", True, (), None),
        ("127.0.0.1", False, (), "loopback"),
        ("::1", False, (), "loopback"),
        ("10.0.0.5", False, (), "private"),
        ("10.0.0.5", False, ("10.0.0.0/8",), None),
        ("172.16.3.4", True, (), "private"),
        ("169.254.169.254", True, (), "metadata"),
        ("fd00:ec2::254", True, (), "metadata"),
        ("169.254.1.1", True, (), "link-local"),
        ("::ffff:127.0.0.1", False, (), "loopback"),
        ("100.64.0.1", False, (), "public"),
        ("224.0.0.1", False, (), "public"),
        ("0.0.0.0", False, (), "private"),
    ],
)
def test_the_guard_rules(
    address: str, loopback_ok: bool, allow: tuple[str, ...], refused: str | None
) -> None:
    why = Guard(loopback_ok=loopback_ok, allow=allow).refusal(ipaddress.ip_address(address))
    if refused is None:
        assert why is None
    else:
        assert why is not None and refused in why


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "not an http or https URL"),
        ("http:///path", "has no host"),
        ("http://example.com:99999/", "invalid port"),
        ("http://no-such-host.invalid/", "does not resolve"),
    ],
)
def test_the_guard_refuses_bad_urls(url: str, message: str) -> None:
    with pytest.raises(UrlRefused, match=message):
        asyncio.run(Guard(loopback_ok=True).check(url))


def test_an_unresolved_host_passes_at_creation_only() -> None:
    assert asyncio.run(Guard(loopback_ok=True).check("http://x.invalid/", must_resolve=False)) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"webhook_allow": ("10.0.0.0/33",)}, "not a CIDR range"),
        ({"webhook_backoff_scale": -1}, "webhook_backoff_scale"),
        ({"webhook_timeout": 0}, "webhook_timeout"),
        ({"webhook_pool": 0}, "webhook_pool"),
    ],
)
def test_webhook_settings_are_checked(change: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ServerSettings(**change)  # type: ignore[arg-type]


def test_serve_refuses_a_bad_webhook_allow(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--db", ":memory:", "--webhook-allow", "ten/8"]) == 2
    assert "not a CIDR range" in capsys.readouterr().err


def test_backoff_follows_the_cue_and_repeats_its_last_step() -> None:
    retry = {"backoff_minutes": [1, 5]}
    assert [backoff_seconds(retry, n, 1.0) for n in (1, 2, 3)] == [60.0, 300.0, 300.0]
    assert backoff_seconds({}, 3, 0.5) == 15 * 30.0


def test_the_pool_is_shared_fairly_between_tenants(tmp_path: Path) -> None:
    async def scenario() -> tuple[list[str], list[str]]:
        async with opened(str(tmp_path / "fair.db")) as storage:
            with receiver((200, 0.3)) as rec:
                busy, quiet = await tenant(storage), await tenant(storage)
                names = {}
                for who, count in ((busy, 20), (quiet, 2)):
                    cue = await make_cue(
                        storage, who, transport="webhook", callback={"url": rec.url}
                    )
                    names[cue.id] = who
                    fires = [NewFire(cue_id=cue.id, scheduled_for=0.0) for _ in range(count)]
                    await storage.fire(who, fires, time.time())
                settings = ServerSettings(db=":memory:", webhook_pool=4)
                dispatcher = Dispatcher(storage, settings)
                assert await dispatcher.pump() == 4  # one pass fills the pool
                await dispatcher.drain()
                first = [names[json.loads(r.body)["cue_id"]] for r in rec.requests]
                await dispatcher.aclose()
                return first, [busy, quiet]

    first, (busy, quiet) = asyncio.run(scenario())
    # The busy tenant's backlog of 20 does not take all four slots.
    assert sorted(first) == sorted([busy, busy, quiet, quiet])


def test_a_stored_url_is_refused_at_delivery(tmp_path: Path) -> None:
    async def scenario() -> str | None:
        async with opened(str(tmp_path / "refuse.db")) as storage:
            who = await tenant(storage)
            cue = await make_cue(
                storage,
                who,
                transport="webhook",
                callback={"url": "http://127.0.0.1:9/x"},
                max_attempts=1,
            )
            (execution,) = await storage.fire(who, [NewFire(cue_id=cue.id, scheduled_for=0)], 1.0)
            # This server does not listen on loopback only: loopback is off limits now.
            dispatcher = Dispatcher(storage, ServerSettings(db=":memory:", host="0.0.0.0"))
            assert await dispatcher.pump() == 1
            await dispatcher.drain()
            await dispatcher.aclose()
            done = await storage.get_execution(who, execution.id)
            assert done is not None and done.status == "failed" and done.outcome is not None
            return done.outcome.error

    error = asyncio.run(scenario())
    assert error is not None and error.startswith("refused: host '127.0.0.1' resolves to 127.0.0.1")
