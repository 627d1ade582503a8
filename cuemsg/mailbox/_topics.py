"""Topic flows: subscribe, unsubscribe, and publish one copy to each subscribed mailbox.

Each subscription is a cue of its own, named `cuemsg.sub:<mailbox address>:<pattern>`
and paused (it never fires): subscribing is creating it, unsubscribing is
deleting it. Two mailboxes subscribing at once touch different cues, so
no update is ever lost, the plain contract is enough, and subscriptions
outlive every process. `publish` lists the subscription cues, keeps those
whose pattern matches (`subjects.matches`) and fires one message per
mailbox, in one `fire.batch` where the server has it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import msgspec

from cuemsg._exceptions import Conflict, MailboxError, NotFound
from cuemsg.cueapi.models import Cue, CueList, FireRequest
from cuemsg.mailbox._config import MAILBOX_SCHEDULE
from cuemsg.mailbox._opening import find_cue
from cuemsg.mailbox._ops import CreateCue, DeleteCue, Fire, FireMany, Flow, ListCues, UpdateCue
from cuemsg.mailbox._records import Sent
from cuemsg.mailbox._send import SendFlows, check_ttl
from cuemsg.mailbox.subjects import check_pattern, check_topic, matches

log = logging.getLogger("cuemsg.mailbox")

#: Names of subscription cues start with this.
SUBSCRIPTION_PREFIX = "cuemsg.sub:"
#: The key of a subscription cue's payload that describes it.
SUBSCRIPTION_KEY = "cuemsg_subscription"
#: Cues asked for per page when the subscriptions are listed.
CUE_PAGE = 200


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    """One mailbox's subscription to a pattern (stored on the server as a cue).

    Attributes:
        pattern: the dotted pattern (`*`: one token, `>`: the rest).
        address: the subscribed mailbox's address (its cue id).
        mailbox: that mailbox's name.
        cue_id: the subscription's own cue.
    """

    pattern: str
    address: str
    mailbox: str
    cue_id: str


def subscription_name(address: str, pattern: str) -> str:
    """The name of the cue that holds `address`'s subscription to `pattern`."""
    return f"{SUBSCRIPTION_PREFIX}{address}:{pattern}"


def read_subscription(cue: Cue) -> Subscription | None:
    """The subscription a cue holds, or None when it is not a subscription cue."""
    if not cue.name.startswith(SUBSCRIPTION_PREFIX):
        return None
    about = cue.payload.get(SUBSCRIPTION_KEY)
    if not isinstance(about, dict):
        return None
    pattern, address, mailbox = (about.get(k) for k in ("pattern", "address", "mailbox"))
    if not (isinstance(pattern, str) and isinstance(address, str) and isinstance(mailbox, str)):
        return None
    return Subscription(pattern=pattern, address=address, mailbox=mailbox, cue_id=cue.id)


class TopicFlows(SendFlows):
    """Topics: subscriptions stored on the server, and publishing to them."""

    def subscribe(self, pattern: str) -> Flow[Subscription]:
        """Subscribe this mailbox to `pattern` (subscribing twice is one subscription)."""
        check_pattern(pattern)
        name = subscription_name(self.info.address, pattern)
        about = {"pattern": pattern, "address": self.info.address, "mailbox": self.info.name}
        cue: Cue | None = None
        for _ in range(3):
            try:
                cue = yield CreateCue(
                    name=name,
                    payload={SUBSCRIPTION_KEY: about},
                    schedule=MAILBOX_SCHEDULE,
                    retry={"max_attempts": 1},
                    description=f"cuemsg: mailbox {self.info.name!r} subscribes to {pattern!r}",
                )
                break
            except Conflict as exc:
                if exc.code != "cue_name_taken":
                    raise
                cue = yield from find_cue(name, CUE_PAGE)
                if cue is not None:
                    break
                # Unsubscribed by another process in between: create it again.
        if cue is None:  # pragma: no cover - created and deleted three times in a row
            raise MailboxError(f"could not create or find the subscription cue {name!r}")
        found = read_subscription(cue)
        if found is None:  # left untouched: it is someone else's
            raise MailboxError(f"the cue {name!r} ({cue.id}) exists but is not a subscription")
        if cue.status == "active":
            yield UpdateCue(cue.id, {"status": "paused"})  # it must never fire
        log.info("mailbox %s subscribed to %r", self.info.name, pattern)
        return found

    def unsubscribe(self, pattern: str) -> Flow[bool]:
        """End this mailbox's subscription to `pattern`; False when it had none."""
        check_pattern(pattern)
        for sub in (yield from self.subscriptions()):
            if sub.pattern == pattern:
                try:
                    yield DeleteCue(sub.cue_id)
                except NotFound:
                    return False  # another process unsubscribed it first
                log.info("mailbox %s unsubscribed from %r", self.info.name, pattern)
                return True
        return False

    def subscriptions(self) -> Flow[list[Subscription]]:
        """This mailbox's subscriptions (from the server)."""
        subs = yield from self.all_subscriptions()
        return [s for s in subs if s.address == self.info.address]

    def all_subscriptions(self) -> Flow[list[Subscription]]:
        """Every subscription of the tenant: one request per `CUE_PAGE` cues."""
        subs: list[Subscription] = []
        offset = 0
        while True:
            listing: CueList = yield ListCues(offset=offset, limit=CUE_PAGE)
            for cue in listing.cues:
                sub = read_subscription(cue)
                if sub is not None:
                    subs.append(sub)
            offset += len(listing.cues)
            if not listing.cues or offset >= listing.total:
                return subs

    def publish(
        self,
        topic: str,
        body: Any,
        *,
        ttl: float | None = None,
        thread: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Flow[list[Sent]]:
        """Fire one copy of `body` to each mailbox subscribed to a pattern matching `topic`.

        Each copy is its own message (own id, execution, ack and record) and
        records `topic`. A mailbox with several matching patterns gets one
        copy. A subscriber whose mailbox cue is gone is skipped and its
        subscriptions are removed (logged): a deleted mailbox never comes back
        at that address.
        Answers one `Sent` per copy, in subscription order; none is logged,
        not raised.
        """
        check_topic(topic)
        check_ttl(ttl)
        subs = yield from self.all_subscriptions()
        targets = list(dict.fromkeys(s.address for s in subs if matches(s.pattern, topic)))
        if not targets:
            log.info("published on %r: no mailbox subscribes to it", topic)
            return []
        fires: list[FireRequest] = []
        for address in targets:
            meta, payload = self.message_payload(
                body, ttl=ttl, thread=thread, headers=headers, topic=topic
            )
            self.remember_peer(thread, address)
            fires.append(
                FireRequest(cue_id=address, payload_override=payload, idempotency_key=meta.id)
            )
        try:
            results = yield FireMany(fires)
            made = list(zip(fires, results, strict=True))
        except NotFound:
            # A subscriber's mailbox was deleted: fire the others one by one (their keys
            # make the fires a failed batch did make count once).
            made = []
            for fire in fires:
                try:
                    fired = yield Fire(
                        fire.cue_id,
                        fire.payload_override or {},
                        idempotency_key=str(fire.idempotency_key),
                    )
                except NotFound:
                    yield from self._drop_dead(topic, fire.cue_id, subs)
                    continue
                made.append((fire, fired))
        self.stats.count("sent", len(made))
        return [
            Sent(
                id=str(fire.idempotency_key),
                execution_id=fired.id,
                cue_id=fire.cue_id,
                scheduled_for=fired.scheduled_for,
            )
            for fire, fired in made
        ]

    def _drop_dead(self, topic: str, address: str, subs: list[Subscription]) -> Flow[None]:
        """Remove every subscription of `address`, a mailbox whose cue is gone for good."""
        log.warning(
            "published on %r: subscriber %s has no mailbox cue any more; skipped, and its "
            "subscriptions removed",
            topic,
            address,
        )
        for sub in subs:
            if sub.address != address:
                continue
            with contextlib.suppress(NotFound):  # removed meanwhile by another publisher
                yield DeleteCue(sub.cue_id)
