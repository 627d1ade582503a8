"""A live reader of the event feed for tests: `cuemsg._events.follow` in a thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import httpx

from cuemsg._events import FeedEvent, follow


class Tail:
    """Collects a tenant's events as they arrive; `wait_for` polls what came."""

    def __init__(self, base_url: str, key: str, **options: Any) -> None:
        self.events: list[FeedEvent] = []
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._args = (base_url, key)
        # A short read timeout: a quiet stream times out each second and `follow`
        # reconnects from the last id it saw (or, once stopped, returns).
        self._http = httpx.Client(timeout=httpx.Timeout(10.0, read=1.0))
        self._options = {"http": self._http, **options}
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for event in follow(*self._args, stop=self._stop, **self._options):
                self.events.append(event)
        except BaseException as exc:  # the test reads it
            self.errors.append(exc)

    def wait_for(
        self, predicate: Callable[[list[FeedEvent]], bool], timeout: float = 10.0
    ) -> list[FeedEvent]:
        deadline = time.monotonic() + timeout
        while not predicate(self.events):
            assert not self.errors, self.errors
            assert time.monotonic() < deadline, f"waited {timeout}s; got {self.events}"
            time.sleep(0.02)
        return list(self.events)

    def ready(self) -> Tail:
        self.wait_for(lambda evs: any(e.type == "ready" for e in evs))
        return self

    @property
    def feed(self) -> list[FeedEvent]:
        """The hand-off events so far (no `ready`)."""
        return [e for e in self.events if e.type != "ready"]

    def stop(self) -> None:
        self._stop.set()
        self._http.close()
        self._thread.join(timeout=5)


def by_execution(events: list[FeedEvent]) -> dict[str, list[str]]:
    """Each execution's event types, in feed order."""
    out: dict[str, list[str]] = {}
    for e in events:
        if e.type != "ready":
            out.setdefault(e.data["execution_id"], []).append(e.type)
    return out
