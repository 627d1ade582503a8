"""Send flows: the envelope of an outgoing message, `send` and `send_many`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from cuemsg._exceptions import NotFound
from cuemsg.cueapi.models import FireRequest
from cuemsg.envelope import Kind, Meta, build_payload, from_timestamp, new_id, utcnow
from cuemsg.mailbox._helpers import as_datetime
from cuemsg.mailbox._ops import Fire, FireMany, Flow
from cuemsg.mailbox._records import Sent
from cuemsg.mailbox._signed import SignatureFlows
from cuemsg.mailbox.names import is_address
from cuemsg.mailbox.tracing import with_trace


class SendFlows(SignatureFlows):
    """Sending: fire messages keyed by their id."""

    # -- sending ---------------------------------------------------------------------------

    def message_payload(
        self,
        body: Any,
        *,
        kind: Kind = "message",
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
        correlation_id: str | None = None,
        reply_task: str | None = None,
        message_id: str | None = None,
        gather: str | None = None,
        topic: str | None = None,
    ) -> tuple[Meta, dict[str, Any]]:
        """The envelope of an outgoing message (pure: the id is made here, once).

        Raises:
            TypeError: `thread` is not a string, or `headers` not strings to strings
                (every receiver would reject the envelope as unreadable).
        """
        _check_thread_and_headers(thread, headers)
        sent_at = utcnow()
        start = sent_at.timestamp()
        if send_at is not None:
            start = max(start, send_at.timestamp() if isinstance(send_at, datetime) else send_at)
        meta = Meta(
            id=message_id or new_id(),
            kind=kind,
            sender=self.info.address,
            sender_name=self.info.name,
            correlation_id=correlation_id,
            reply_task=reply_task,
            thread=thread,
            topic=topic,
            sent_at=sent_at,
            expires_at=None if ttl is None else from_timestamp(start + ttl),
            headers=dict(with_trace(headers) or {}),  # the current span's traceparent
            gather=gather,
        )
        payload = build_payload(meta=meta, body=body, task=task, reply_cue_id=self.info.address)
        return meta, self.signed(payload)

    def fire_to(self, address: str, fire: Fire | FireMany) -> Flow[Any]:
        """Run `fire` at `address`; a 404 means its cue is gone, so the names that led
        there are looked up again next time (a mailbox opened again has a new address)."""
        try:
            return (yield fire)
        except NotFound:
            self.addresses.forget(address)
            raise

    def send(
        self,
        to_cue: str,
        body: Any,
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[Sent]:
        """Fire one message at `to_cue`, a name or an address (keyed by its id: a retried
        fire makes no copy)."""
        check_ttl(ttl)
        meta, payload = self.message_payload(
            body, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
        )
        when = as_datetime(send_at)
        if not is_address(to_cue):  # an address is kept as is: no flow to make for it
            to_cue = yield from self.addresses.resolve(to_cue)
        self.remember_peer(thread, to_cue)
        fired = yield from self.fire_to(
            to_cue, Fire(to_cue, payload, idempotency_key=meta.id, send_at=when)
        )
        self.stats.count("sent")
        return Sent(
            id=meta.id, execution_id=fired.id, cue_id=to_cue, scheduled_for=fired.scheduled_for
        )

    def send_many(
        self,
        to_cue: str,
        bodies: Sequence[Any],
        *,
        task: str | None = None,
        send_at: datetime | float | None = None,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[list[Sent]]:
        """Fire many messages at `to_cue` in as few requests as the server allows, in order."""
        check_ttl(ttl)
        when = as_datetime(send_at)
        to_cue = yield from self.addresses.resolve(to_cue)
        self.remember_peer(thread, to_cue)
        metas: list[Meta] = []
        fires: list[FireRequest] = []
        for body in bodies:
            meta, payload = self.message_payload(
                body, task=task, send_at=send_at, ttl=ttl, thread=thread, headers=headers
            )
            metas.append(meta)
            fires.append(
                FireRequest(
                    cue_id=to_cue, payload_override=payload, send_at=when, idempotency_key=meta.id
                )
            )
        results = yield from self.fire_to(to_cue, FireMany(fires))
        self.stats.count("sent", len(results))
        return [
            Sent(id=m.id, execution_id=r.id, cue_id=to_cue, scheduled_for=r.scheduled_for)
            for m, r in zip(metas, results, strict=True)
        ]


def check_ttl(ttl: float | None) -> None:
    """Refuse a caller's `ttl` that would send a message expired on arrival.

    Only what callers give: a reply to a request carries what is left of the
    request's deadline, which may have passed (a late reply is still sent).
    """
    if ttl is not None and not ttl > 0:  # `not >`: NaN is refused too
        raise ValueError(f"ttl must be > 0 seconds, not {ttl}")


def _check_thread_and_headers(thread: object, headers: object) -> None:
    """Refuse, at the sender, what every receiver would reject as an unreadable envelope."""
    if thread is not None and not isinstance(thread, str):
        raise TypeError(f"thread must be a string, not {type(thread).__name__} {thread!r}")
    if headers is None:
        return
    if not isinstance(headers, dict):
        raise TypeError(f"headers must be a dict of strings, not {type(headers).__name__}")
    for key, value in headers.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"headers must map strings to strings: {key!r}: {value!r} is "
                f"{type(key).__name__}: {type(value).__name__}"
            )
