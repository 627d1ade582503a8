"""Server settings: defaults, environment, and clear errors for bad values."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from cuemsg.server.settings import DEFAULT_LEASE_SECONDS, ServerSettings


def test_defaults_and_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServerSettings().lease_seconds == DEFAULT_LEASE_SECONDS
    monkeypatch.setenv("CUEMSG_LEASE_SECONDS", "5")
    monkeypatch.setenv("CUEMSG_EXTENSIONS", "0")
    monkeypatch.setenv("CUEMSG_DB", ":memory:")
    settings = ServerSettings.from_env(rate_limit=7, lease_seconds=None)
    assert (settings.lease_seconds, settings.extensions, settings.db) == (5.0, False, ":memory:")
    assert settings.rate_limit == 7 and settings.extension_names == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("lease_seconds", 0),
        ("unclaimed_timeout", -1),
        ("sweep_interval", 0),
        ("max_body_bytes", 0),
        ("rate_limit", -1),
    ],
)
def test_bad_values_name_the_setting(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        ServerSettings(**dict[str, Any]({field: value}))


def test_bad_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUEMSG_LEASE_SECONDS", "soon")
    with pytest.raises(ValueError, match="CUEMSG_LEASE_SECONDS='soon'"):
        ServerSettings.from_env()


def test_serve_refuses_a_bad_setting_with_exit_2() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cuemsg", "serve", "--db", ":memory:", "--lease-seconds", "-1"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "lease_seconds must be > 0" in done.stderr


def test_bad_sqlite_synchronous_is_refused() -> None:
    from cuemsg.server.storage.sqlite import SQLiteStorage

    with pytest.raises(ValueError, match="synchronous"):
        SQLiteStorage(":memory:", synchronous="SOMETIMES")
