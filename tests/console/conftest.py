"""The console in a real browser: Debian's chromium, headless, driven through
its chromedriver (Selenium), against the embedded server over loopback.

`browser` skips with the reason when chromium, chromium-driver or selenium is
missing (.ci/run installs the Debian packages). Screenshots go to a temporary
folder, or to `$CUEMSG_CONSOLE_SHOTS` when set (read at import: the suite's
autouse fixture clears `CUEMSG_*` before each test).
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cuemsg import CueClient, Mailbox
from cuemsg.testing import RunningServer, run_server

SHOTS_DIR = os.environ.get("CUEMSG_CONSOLE_SHOTS")
WAIT = 15.0  # seconds a step may take before the test fails (a hang guard, not a speed check)


def browser_problem() -> str | None:
    """Why the browser tests cannot run here, or None when they can."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    if missing:
        return (
            f"{' and '.join(missing)} not found: install Debian's browser with "
            "`apt-get install -y chromium chromium-driver` (.ci/run does)"
        )
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install -e '.[test]')"
    return None


def new_driver(width: int = 1280, height: int = 860) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(shutil.which("chromium"))
    for arg in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root, where chromium's sandbox cannot start
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--window-size={width},{height}",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=Service(str(shutil.which("chromedriver"))))


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    problem = browser_problem()
    if problem:
        # CI installs chromium (.ci/run) and sets CUEMSG_REQUIRE_BROWSER=1: there it must run.
        if os.environ.get("CUEMSG_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CUEMSG_REQUIRE_BROWSER=1 but {problem}")
        pytest.skip(problem)
    driver = new_driver()
    try:
        yield driver
    finally:
        driver.quit()


class Shots:
    """Numbered screenshots of each step, in one folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.taken: list[Path] = []

    def take(self, driver: Any, name: str) -> Path:
        path = self.folder / f"{len(self.taken) + 1:02d}-{name}.png"
        assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
        self.taken.append(path)
        return path


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Shots:
    folder = Path(SHOTS_DIR) if SHOTS_DIR else tmp_path_factory.mktemp("console-shots")
    folder.mkdir(parents=True, exist_ok=True)
    return Shots(folder)


@dataclass
class Scene:
    """A server with two agents' messages on record, as the browser tests find it."""

    server: RunningServer
    client: CueClient
    writer: Mailbox
    planner: Mailbox
    request_id: str  # the planner's request the writer answered
    dead_id: str  # the message the writer rejected


@pytest.fixture(scope="module")
def scene(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scene]:
    db = tmp_path_factory.mktemp("console-db") / "cuemsg.db"
    with (
        run_server(db=f"sqlite:///{db}") as server,
        CueClient(server.api_key, server.base_url) as client,
        Mailbox.open(client, "writer") as writer,
        Mailbox.open(client, "planner") as planner,
    ):
        # A request the writer answers while serving (a mailbox of its own: a stopped
        # mailbox stays stopped, and the tests receive with `writer` later).
        with Mailbox.open(client, "writer") as server_side:
            serving = threading.Thread(
                target=server_side.serve,
                args=(lambda msg: {"words": len(msg.body["text"].split())},),
                kwargs={"idle_timeout": 10},
            )
            serving.start()
            planner.request(
                writer.address, {"text": "agents talk to agents"}, timeout=30, thread="t-7"
            )
            server_side.stop()
            serving.join(timeout=30)
        # One message handled, one rejected (a dead letter), one left waiting.
        planner.send(writer.address, {"goal": "draft the intro"}, thread="t-7")
        planner.send(writer.address, {"goal": "draft the outro"}, thread="t-7")
        for msg in writer.receive(wait=2, limit=2):
            if msg.body["goal"] == "draft the outro":
                msg.reject("the outline is missing")
            else:
                msg.ack()
        planner.send(writer.address, {"goal": "review the draft"}, thread="t-7")
        executions = client.executions.list(cue_id=writer.address, limit=50).executions
        requests = [
            e for e in executions if (e.payload or {}).get("cuemsg", {}).get("kind") == "request"
        ]
        dead = [e for e in executions if e.status == "failed"]
        assert len(requests) == 1 and len(dead) == 1, executions
        yield Scene(server, client, writer, planner, requests[0].id, dead[0].id)
