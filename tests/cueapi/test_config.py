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


@pytest.mark.parametrize("client_class", [CueClient, AsyncCueClient])
def test_bad_configuration_is_refused_at_construction(
    client_class: type[CueClient] | type[AsyncCueClient], monkeypatch: pytest.MonkeyPatch
) -> None:
    # These used to construct, then fail on the first call as
    # "TransportError: UnsupportedProtocol: ... '://'", or never time out.
    with pytest.raises(
        ValueError,
        match=r"'127.0.0.1:8787' is not an http:// or https:// URL: "
        r"add http:// \(http://127.0.0.1:8787\)",
    ):
        client_class("k", "127.0.0.1:8787")
    with pytest.raises(
        ValueError, match=r"^the base URL 'ftp://x' is not an http:// or https:// URL$"
    ):
        client_class("k", "ftp://x")
    monkeypatch.setenv("CUEAPI_BASE_URL", "localhost:8787")  # the environment is checked too
    with pytest.raises(ValueError, match="add http://"):
        client_class("k")
    for timeout in (0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="timeout must be > 0 seconds"):
            client_class("k", "http://x", timeout=timeout)
    with pytest.raises(ValueError, match="max_retries must be >= 0, not -1"):
        client_class("k", "HTTPS://x", max_retries=-1)


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
