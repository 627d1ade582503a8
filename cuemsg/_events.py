"""Reading the event feed (`GET /v1/events`, extension `events.stream`) from a
client: Server-Sent Events parsing, and `follow`, which yields events and
reconnects by itself with `Last-Event-ID`, so nothing is missed across a
dropped connection or a server restart. `cuemsg tail` is built on it.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx

from cuemsg._exceptions import CueAPIError, ExtensionNotAvailable, TransportError
from cuemsg.cueapi._routes import parse_answer

#: Seconds without a byte before a stream is taken for dead (the server sends
#: a keepalive every 15 s).
READ_TIMEOUT = 45.0
#: Pauses between reconnection attempts: doubling from the first to the last.
RECONNECT_MIN = 0.2
RECONNECT_MAX = 5.0


class FeedEvent:
    """One event: its `id` (None if it carried none), the SSE event name
    (`fired`, `claimed`, ..., or `ready`), its data as sent (`raw`, one line of
    JSON) and decoded (`data`, on first use: `tail --json` never needs it)."""

    __slots__ = ("_data", "id", "raw", "type")

    def __init__(self, id: int | None, type: str, raw: str) -> None:
        self.id = id
        self.type = type
        self.raw = raw
        self._data: dict[str, Any] | None = None

    @property
    def data(self) -> dict[str, Any]:
        """The JSON data, decoded.

        Raises:
            ValueError: it is not a JSON object.
        """
        if self._data is None:
            value = json.loads(self.raw)
            if not isinstance(value, dict):
                raise ValueError(f"event data is not a JSON object: {value!r}")
            self._data = value
        return self._data

    def __repr__(self) -> str:
        return f"FeedEvent(id={self.id!r}, type={self.type!r}, raw={self.raw!r})"


def parse_sse(lines: Iterable[str]) -> Iterator[FeedEvent]:
    """The events in a `text/event-stream`, given line by line (without newlines).

    Comments (`: keepalive`) are skipped; an event ends at a blank line.
    """
    event_id: int | None = None
    name = "message"
    data: list[str] = []
    for line in lines:
        if line == "":
            if data:
                yield FeedEvent(event_id, name, "\n".join(data))
            event_id, name, data = None, "message", []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "id":
            event_id = int(value) if value.isdigit() else None
        elif field == "event":
            name = value
        elif field == "data":
            data.append(value)


def follow(
    base_url: str,
    api_key: str,
    *,
    cue_id: str | None = None,
    thread: str | None = None,
    last_event_id: int | None = None,
    http: httpx.Client | None = None,
    stop: threading.Event | None = None,
    on_reconnect: Callable[[BaseException], None] | None = None,
) -> Iterator[FeedEvent]:
    """The tenant's events as they happen, for ever (until `stop` is set).

    Args:
        base_url: the server (`cuemsg serve`), e.g. `http://127.0.0.1:8080`.
        api_key: the tenant's key.
        cue_id: only this cue's executions (a mailbox's address).
        thread: only messages of this thread.
        last_event_id: resume after this id (0: everything on record); None
            starts at the present.
        http: the client to use (one is made and closed otherwise).
        stop: set it to end the iteration at the next event or keepalive.
        on_reconnect: called with the error each time the stream dropped and is
            about to be opened again.

    Raises:
        ExtensionNotAvailable: the server has no event feed (`events.stream`).
        AuthenticationError, ValidationError: the key or a parameter is wrong
            (never retried).
    """
    own = http is None
    client = http or httpx.Client(timeout=httpx.Timeout(10.0, read=READ_TIMEOUT))
    params = {k: v for k, v in (("cue_id", cue_id), ("thread", thread)) if v is not None}
    pause = RECONNECT_MIN
    try:
        while stop is None or not stop.is_set():
            headers = {"Authorization": f"Bearer {api_key}"}
            if last_event_id is not None:
                headers["Last-Event-ID"] = str(last_event_id)
            try:
                with client.stream(
                    "GET", base_url.rstrip("/") + "/v1/events", params=params, headers=headers
                ) as answer:
                    if answer.status_code == 404:
                        raise ExtensionNotAvailable("events.stream")
                    if answer.status_code != 200:
                        parse_answer(answer.status_code, answer.headers, answer.read())
                        raise CueAPIError(
                            f"the event feed answered {answer.status_code}",
                            status=answer.status_code,
                            code="invalid_response",
                        )
                    pause = RECONNECT_MIN
                    for event in parse_sse(answer.iter_lines()):
                        if event.id is not None:
                            last_event_id = event.id
                        yield event
                        if stop is not None and stop.is_set():
                            return
            except httpx.TransportError as exc:
                if stop is not None and stop.is_set():
                    return
                if on_reconnect is not None:
                    on_reconnect(TransportError(str(exc) or type(exc).__name__))
                time.sleep(pause)
                pause = min(pause * 2, RECONNECT_MAX)
    finally:
        if own:
            client.close()
