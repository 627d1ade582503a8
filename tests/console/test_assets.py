"""The console's files as the server hands them out (no browser): the
redirect to /console/, each asset with its type and a strict
Content-Security-Policy, nothing outside the list, no file from another
origin, and every file the pages import shipped in the package."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cuemsg.console import ASSETS, HERE
from cuemsg.testing import RunningServer, run_server

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server() as running:
        yield running


def test_console_redirects_to_its_index(server: RunningServer) -> None:
    answer = httpx.get(f"{server.base_url}/console")
    assert answer.status_code == 308 and answer.headers["location"] == "/console/"
    page = httpx.get(f"{server.base_url}/console", follow_redirects=True)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text


@pytest.mark.parametrize("name", sorted(ASSETS))
def test_every_asset_is_served_with_its_type_and_policy(server: RunningServer, name: str) -> None:
    answer = httpx.get(f"{server.base_url}/console/{name}")
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == ASSETS[name]
    assert answer.content == (HERE / name).read_bytes()
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    # No login cookie exists: the key lives in the tab and travels as a Bearer header.
    assert "set-cookie" not in answer.headers


@pytest.mark.parametrize("name", ["__init__.py", "missing.js", "..%2Fserver%2Fapp.py"])
def test_only_listed_files_are_served(server: RunningServer, name: str) -> None:
    answer = httpx.get(f"{server.base_url}/console/{name}")
    assert answer.status_code == 404
    assert "no console file" in answer.text or answer.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/console", "/console/", "/console/app.js"])
def test_a_wrong_method_is_the_apis_usual_405(server: RunningServer, path: str) -> None:
    answer = httpx.post(f"{server.base_url}{path}")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET, HEAD"
    assert answer.json()["error"]["code"] == "method_not_allowed"


def test_the_console_needs_no_key_to_load_but_the_api_does(server: RunningServer) -> None:
    assert httpx.get(f"{server.base_url}/console/").status_code == 200
    refused = httpx.get(f"{server.base_url}/v1/cues")
    assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_assets_are_self_contained_and_shipped() -> None:
    on_disk = {p.name for p in HERE.iterdir() if p.suffix in (".html", ".css", ".js")}
    assert on_disk == set(ASSETS), "every console file is listed in ASSETS, and only those"
    for name in ASSETS:
        text = (HERE / name).read_text()
        # No CDN: nothing is fetched from another origin.
        assert not re.search(r"""(src|href)=["']?(https?:)?//""", text), name
        assert "import(" not in text and "https://" not in text, name
        # Every module a file imports is one of ours.
        for imported in re.findall(r"""from\s+["']\./([\w.]+)["']""", text):
            assert imported in ASSETS, f"{name} imports {imported}, which is not shipped"
    for referenced in re.findall(
        r"""(?:src|href)="([\w.]+)\"""", (HERE / "index.html").read_text()
    ):
        assert referenced in ASSETS
    # Shipped as package data, so a plain `pip install cuemsg` serves the console.
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"console/*.html", "console/*.css", "console/*.js"' in pyproject
