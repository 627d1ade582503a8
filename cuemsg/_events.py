"""Reading the event feed (`GET /v1/events`, extension `events.stream`) from a
client: Server-Sent Events parsing, and `follow`, which yields events and
reconnects by itself with `Last-Event-ID`, so nothing is missed across a
dropped connection or a server restart. `cuemsg tail` is built on it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import httpx
import msgspec

from cuemsg._exceptions import CueAPIError, ExtensionNotAvailable, TransportError
from cuemsg.cueapi._routes import parse_answer

#: Seconds without a byte before a stream is taken for dead (the server sends
#: a keepalive every 15 s).
READ_TIMEOUT = 45.0
#: Pauses between reconnection attempts: doubling from the first to the last.
RECONNECT_MIN = 0.2
RECONNECT_MAX = 5.0

_decode_json = msgspec.json.Decoder().decode


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
            try:
                value = _decode_json(self.raw)
            except msgspec.DecodeError as exc:
                raise ValueError(f"event data is not JSON: {exc}") from None
            if not isinstance(value, dict):
                raise ValueError(f"event data is not a JSON object: {value!r}")
            self._data = value
        return self._data

    def __repr__(self) -> str:
        return f"FeedEvent(id={self.id!r}, type={self.type!r}, raw={self.raw!r})"


class SSEParser:
    """Server-Sent Events read from bytes as they arrive: `feed` takes a chunk
    and returns the events it completes (a chunk may end mid-line or mid-event;
    the rest waits for the next). Lines may end in LF, CRLF or CR; comments
    (`: keepalive`) are skipped; an event ends at a blank line."""

    __slots__ = ("_carry", "_data", "_id", "_name")

    def __init__(self) -> None:
        self._carry = b""
        self._id: int | None = None
        self._name = "message"
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[FeedEvent]:
        buf = self._carry + chunk
        held = b""
        if b"\r" in buf:
            if buf.endswith(b"\r"):  # the CR of a CRLF whose LF is in the next chunk
                buf, held = buf[:-1], b"\r"
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        end = buf.rfind(b"\n")
        if end < 0:
            self._carry = buf + held
            return []
        self._carry = buf[end + 1 :] + held
        out: list[FeedEvent] = []
        for line in buf[:end].decode("utf-8", "replace").split("\n"):
            if not line:
                if self._data:
                    out.append(FeedEvent(self._id, self._name, "\n".join(self._data)))
                self._id, self._name, self._data = None, "message", []
                continue
            if line[0] == ":":
                continue
            field, _, value = line.partition(":")
            if value[:1] == " ":
                value = value[1:]
            if field == "data":
                self._data.append(value)
            elif field == "id":
                self._id = int(value) if value.isdigit() else None
            elif field == "event":
                self._name = value
        return out


def parse_sse(lines: Iterable[str]) -> Iterator[FeedEvent]:
    """The events in a `text/event-stream`, given line by line (without newlines)."""
    parser = SSEParser()
    for line in lines:
        yield from parser.feed(line.encode() + b"\n")


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
    batches = follow_batches(
        base_url,
        api_key,
        cue_id=cue_id,
        thread=thread,
        last_event_id=last_event_id,
        http=http,
        stop=stop,
        on_reconnect=on_reconnect,
    )
    for batch in batches:
        for event in batch:
            yield event
            if stop is not None and stop.is_set():
                return


def follow_batches(
    base_url: str,
    api_key: str,
    *,
    cue_id: str | None = None,
    thread: str | None = None,
    last_event_id: int | None = None,
    http: httpx.Client | None = None,
    stop: threading.Event | None = None,
    on_reconnect: Callable[[BaseException], None] | None = None,
) -> Iterator[list[FeedEvent]]:
    """`follow`, a list of events at a time: those each read from the network
    completed (never empty). The server sends a busy feed's events in batches,
    so a reader that handles a list at once (`cuemsg tail`) pays per batch,
    not per event. Arguments and errors as `follow`'s."""
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
                    parser = SSEParser()
                    for chunk in answer.iter_bytes():
                        batch = parser.feed(chunk)
                        if batch:
                            for event in reversed(batch):
                                if event.id is not None:
                                    last_event_id = event.id
                                    break
                            yield batch
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
