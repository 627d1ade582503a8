"""Client configuration and the public names: no network."""

from __future__ import annotations

import pytest

import cuemsg.cueapi
from cuemsg.cueapi import (
    DEFAULT_BASE_URL,
    AsyncCueClient,
    CueClient,
    CuemsgError,
    ExtensionNotAvailable,
    MissingAPIKey,
    _routes,
)


def test_defaults_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with CueClient() as c:
        assert c.base_url == DEFAULT_BASE_URL == "https://api.cueapi.ai"
        assert c.api_key is None
        assert repr(c) == "CueClient(base_url='https://api.cueapi.ai')"
    monkeypatch.setenv("CUEAPI_API_KEY", "cue_sk_env")
    monkeypatch.setenv("CUEAPI_BASE_URL", "http://localhost:9/")
    with CueClient() as c:
        assert (c.api_key, c.base_url) == ("cue_sk_env", "http://localhost:9")
    with CueClient("cue_sk_arg", "http://other") as c:  # explicit arguments win
        assert (c.api_key, c.base_url) == ("cue_sk_arg", "http://other")


def test_missing_key_is_raised_before_sending() -> None:
    with CueClient() as c, pytest.raises(MissingAPIKey) as info:
        c.cues.get("cue_x")
    assert "CUEAPI_API_KEY" in str(info.value)
    assert isinstance(info.value, CuemsgError) and isinstance(info.value, ValueError)
    assert c.request_count == 0
    c.api_key = "cue_sk_later"  # a key set afterwards is used from then on
    headers = c._request_args(_routes.get_cue("x"))["headers"]
    assert headers["Authorization"] == "Bearer cue_sk_later"


@pytest.mark.anyio
async def test_async_missing_key_and_aclose() -> None:
    client = AsyncCueClient()
    with pytest.raises(MissingAPIKey):
        await client.executions.claim_next(worker_id="w")
    assert client.request_count == 0  # not even the /v1/info probe
    await client.aclose()


def test_extension_error_names_the_extension() -> None:
    err = ExtensionNotAvailable("workers.list")
    assert err.extension == "workers.list" and "workers.list" in str(err)


def test_all_is_sorted_and_complete() -> None:
    names = cuemsg.cueapi.__all__
    assert names == sorted(names, key=lambda n: (not n.isupper(), n))
    public = {n for n in dir(cuemsg.cueapi) if not n.startswith("_")}
    modules = {"async_client", "client", "models"}
    assert set(names) == public - modules
