"""One messaging interface over the two ways the benchmark can send: Mailbox or raw client.

`RawDriver` uses `cuemsg.cueapi.CueClient` directly, the way a program
without the Mailbox would: a fire with `payload_override`, `claim_next(task,
wait)` and `report_outcome`; requests pair replies by a correlation id.
`MailboxDriver` uses `cuemsg.mailbox.Mailbox` when that package is present.
`make_driver` picks the Mailbox if asked and importable, else the raw client,
and the driver's `label` says which one ran, so the table never claims a
figure for code that did not run.

Every blocking call takes a wait or timeout; none blocks for ever.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any, Protocol

from cuemsg.cueapi import CueClient

#: The message body every benchmark sends (peers too): ~256 bytes of JSON.
BODY_TEXT = "x" * 200


def body(seq: int) -> dict[str, Any]:
    """A benchmark message body: a sequence number, a send time, and padding."""
    return {"seq": seq, "sent_at": time.time(), "text": BODY_TEXT}


def mailbox_available() -> bool:
    """True when the Mailbox package has landed (importable)."""
    try:
        from cuemsg.mailbox import Mailbox  # noqa: F401
    except ImportError:
        return False
    return True


class Driver(Protocol):
    """What a role needs from a way of messaging."""

    label: str
    address: str

    def send(self, to: str, payload: dict[str, Any]) -> None: ...
    def receive(self, wait: float) -> Any | None: ...
    def idle(self, duration: float, wait: float) -> None: ...
    def body_of(self, msg: Any) -> dict[str, Any]: ...
    def ack(self, msg: Any) -> None: ...
    def request(self, to: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]: ...
    def serve(self, handler: Callable[[Any], Any], stop: Callable[[], bool]) -> int: ...
    def close(self) -> None: ...


# -- raw client ---------------------------------------------------------------------------


def ensure_cue(client: CueClient, name: str) -> str:
    """The id of the worker cue called `name` (payload task = name), made if missing."""
    for cue in client.cues.list(limit=1000).cues:
        if cue.name == name:
            return cue.id
    return client.cues.create(name, payload={"task": name}).id


class RawDriver:
    """Messaging with the bare `CueClient`: what a program without the Mailbox does.

    Args:
        base_url, api_key: the server.
        name: this inbox's cue name and task; requests get replies on `name + ".replies"`.
        extensions: use the server's extensions (one-request claims, long-poll);
            False keeps to the plain contract (list + claim + retry, polling).
        poll: with `receive(wait)` on the plain path, the client polls from 50 ms
            up to 1 s apart (its built-in backoff).
    """

    def __init__(
        self, base_url: str, api_key: str, name: str, *, extensions: bool, **_: Any
    ) -> None:
        self.client = CueClient(api_key, base_url, use_extensions=extensions)
        self.client.extensions  # noqa: B018 - probe /v1/info now, not inside a measurement
        self.label = "raw client" + ("" if extensions else ", plain contract")
        self.name = name
        self.worker_id = f"bench-{name}"
        self.address = ensure_cue(self.client, name)
        self._reply_task = f"{name}.replies"
        self._reply_cue: str | None = None

    def send(self, to: str, payload: dict[str, Any]) -> None:
        self.client.cues.fire(to, {"message": payload})

    def receive(self, wait: float, task: str | None = None) -> Any | None:
        got = self.client.executions.claim_next(
            worker_id=self.worker_id, task=task or self.name, wait=wait or None
        )
        return got.executions[0] if got.claimed else None

    def idle(self, duration: float, wait: float) -> None:
        start = time.monotonic()
        while (left := duration - (time.monotonic() - start)) > 0.01:
            self.receive(min(wait, left))

    def body_of(self, msg: Any) -> dict[str, Any]:
        message: dict[str, Any] = msg.payload["message"]
        return message

    def ack(self, msg: Any) -> None:
        self.client.executions.report_outcome(
            msg.execution_id, worker_id=self.worker_id, success=True
        )

    def request(self, to: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        if self._reply_cue is None:
            self._reply_cue = ensure_cue(self.client, self._reply_task)
        corr = uuid.uuid4().hex
        self.client.cues.fire(
            to, {"message": payload, "reply_cue_id": self._reply_cue, "correlation_id": corr}
        )
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            reply = self.receive(left, task=self._reply_task)
            if reply is None:
                continue
            self.ack(reply)
            if reply.payload.get("correlation_id") == corr:
                answer: dict[str, Any] = reply.payload["message"]
                return answer
        raise TimeoutError(f"no reply in {timeout} s")

    def serve(self, handler: Callable[[Any], Any], stop: Callable[[], bool]) -> int:
        served = 0
        while not stop():
            msg = self.receive(1.0)
            if msg is None:
                continue
            answer = handler(msg.payload["message"])
            self.client.cues.fire(
                msg.payload["reply_cue_id"],
                {"message": answer, "correlation_id": msg.payload["correlation_id"]},
            )
            self.ack(msg)
            served += 1
        return served

    def close(self) -> None:
        self.client.close()


# -- Mailbox ------------------------------------------------------------------------------


class MailboxDriver:
    """Messaging with `cuemsg.mailbox.Mailbox`, used as its docs show.

    `receive(wait)` takes the next message from one long-lived `receive()`
    iterator (made with the first call's `wait`; it ends, and is made again,
    after `wait` seconds with no message). `ack()` leaves the message to the
    loop, which acks it when the iterator moves on (its documented default).
    """

    def __init__(
        self,
        base_url: str,
        api_key: str,
        name: str,
        *,
        extensions: bool,
        poll_wait: float | None = None,
        batch: int | None = None,
    ) -> None:
        from cuemsg.mailbox import DEFAULT_POLL_WAIT, Mailbox

        self.client = CueClient(api_key, base_url, use_extensions=extensions)
        self.client.extensions  # noqa: B018 - probe /v1/info now, not inside a measurement
        self.mailbox = Mailbox.open(self.client, name, poll_wait=poll_wait or DEFAULT_POLL_WAIT)
        self.label = "Mailbox" + ("" if extensions else ", plain contract")
        self.address: str = self.mailbox.address
        # receive(prefetch=): claims of up to this many, acks batched (None: its default)
        self.batch = batch
        self._it: Any = None

    def send(self, to: str, payload: dict[str, Any]) -> None:
        self.mailbox.send(to, payload)

    def receive(self, wait: float) -> Any | None:
        if self._it is None:
            self._it = self.mailbox.receive(wait=wait, prefetch=self.batch)
        try:
            return next(self._it)
        except StopIteration:
            self._it = None
            return None

    def idle(self, duration: float, wait: float) -> None:
        # `wait` is the mailbox's poll_wait (given at open); receive ends after `duration` idle
        for msg in self.mailbox.receive(wait=duration):
            msg.ack()

    def body_of(self, msg: Any) -> dict[str, Any]:
        message: dict[str, Any] = msg.body
        return message

    def ack(self, msg: Any) -> None:
        # Left to the loop, as the docs show: a message left unsettled is acked when
        # the loop moves on, and with `claim.settle` that ack rides on the next claim.
        del msg

    def request(self, to: str, payload: dict[str, Any], timeout: float) -> dict[str, Any]:
        answer: dict[str, Any] = self.mailbox.request(to, payload, timeout=timeout)
        return answer

    def serve(self, handler: Callable[[Any], Any], stop: Callable[[], bool]) -> int:
        import threading

        done = threading.Event()

        def watch() -> None:
            while not done.wait(0.05):
                if stop():
                    self.mailbox.stop()
                    return

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        try:
            self.mailbox.serve(lambda msg: handler(msg.body))
        finally:
            done.set()
            watcher.join(timeout=5)
        return int(self.mailbox.stats.replied)

    def close(self) -> None:
        if self._it is not None:
            self._it.close()
        self.mailbox.close()
        self.client.close()


# -- choice -------------------------------------------------------------------------------


def make_driver(
    kind: str,
    base_url: str,
    api_key: str,
    name: str,
    *,
    extensions: bool = True,
    poll_wait: float | None = None,
    batch: int | None = None,
) -> Driver:
    """A driver: `kind` "mailbox" (falls back to the raw client if absent) or "raw".

    `poll_wait` is the Mailbox's longest long-poll (its default when None);
    `batch` the Mailbox's `receive(prefetch=)` (None: its default; the raw client
    claims one at a time).
    """
    if kind == "mailbox" and mailbox_available():
        return MailboxDriver(
            base_url, api_key, name, extensions=extensions, poll_wait=poll_wait, batch=batch
        )
    return RawDriver(base_url, api_key, name, extensions=extensions)


def driver_label(kind: str, extensions: bool = True) -> str:
    """The label `make_driver(kind, ...)` will carry, without connecting."""
    if kind == "mailbox" and mailbox_available():
        return "Mailbox" + ("" if extensions else ", plain contract")
    return "raw client" + ("" if extensions else ", plain contract")
