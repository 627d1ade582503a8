"""The mailbox's decisions, with no I/O: one code path for `Mailbox` and `AsyncMailbox`.

Every operation is a generator *flow* that yields `Op`s (fire, claim,
outcome, call the handler, wait for a reply...) and is sent their results
(or thrown their errors). The sync and async mailboxes only run the ops:
most ops carry a `call(client)` that returns the client's answer (sync) or
an awaitable (async), so the drivers hold no per-operation code. The ops a
driver must run itself are those that wait (`Pause`, `AwaitReply`), run
user code (`CallHandler`), hand a message to the caller of `receive`
(`Deliver`) or schedule work (`WaitSlots`, `Spawn`, `Drain`, `StartReplies`).

This module joins the flows into `MailboxCore`; what is decided lives in
one module per concern:
- `_opening`: create the mailbox cue or find it by name (safe when two
  processes race), its schedule, pausing it;
- `_send`: the envelope, the message id as idempotency key, scheduling;
- `_receive`: what to claim, what to deliver and what to settle without
  the handler (bad envelopes, expired messages, duplicates);
- `_settle`: the outcome bodies of ack, reject, retry-later and replies,
  what a lost lease means, and batched acks (which wait to be recorded
  together with `report_outcomes`, for how long, a refused item);
- `_request` and `_replies`: correlation of replies to waiting requests,
  late and duplicate replies, and why a request timed out;
- `tickets` (values in `ticket`): durable requests, `submit` / `collect` /
  `status` / `pending`, and the sweep that settles expired ones;
- `gather`: ask many, with a receipt per recipient;
- `_serve` and `_leases`: handlers in slots, when each held lease is
  renewed, worker presence;
- `_threads` and `_thread_state`: a thread's history, one handler at a
  time per thread and the busy policy (`serve(on_busy=...)`);
- `_topics` (and the pure `subjects`): subscriptions kept as cues, publish;
- `_state` (what every flow reads), `_ops` (the ops and `Flow`), `_config`
  (options and defaults), `_records` (`Sent`, `MailboxStats`, `Delivery`),
  `_helpers` (small pure functions).
"""

from __future__ import annotations

from cuemsg.mailbox._records import MailboxStats
from cuemsg.mailbox._request import RequestFlows
from cuemsg.mailbox._serve import ServeFlows
from cuemsg.mailbox._topics import TopicFlows
from cuemsg.mailbox.gather import GatherFlows
from cuemsg.mailbox.tickets import TicketFlows


class MailboxCore(ServeFlows, TicketFlows, GatherFlows, RequestFlows, TopicFlows):
    """Everything a mailbox decides; its flows are run by `Mailbox` or `AsyncMailbox`.

    The state and its helpers are `CoreState`'s; each group of flows is a mixin.
    """


class MailboxBase:
    """What `Mailbox` and `AsyncMailbox` share beyond the core: names and counters."""

    _core: MailboxCore

    @property
    def name(self) -> str:
        """The mailbox's name (its cue's name)."""
        return self._core.info.name

    @property
    def address(self) -> str:
        """The mailbox's address: its cue id. Others send to it."""
        return self._core.info.address

    @property
    def task(self) -> str:
        """The task its messages are claimed by."""
        return self._core.info.task

    @property
    def reply_task(self) -> str:
        """The task its replies come back on (`<task>.replies`, same cue)."""
        return self._core.info.reply_task

    @property
    def worker_id(self) -> str:
        """The worker name it claims, heartbeats and settles with."""
        return self._core.info.worker_id

    @property
    def stats(self) -> MailboxStats:
        """What it did so far (counters)."""
        return self._core.stats

    @property
    def pending_requests(self) -> int:
        """Requests waiting for their reply right now."""
        return len(self._core.router)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} address={self.address} task={self.task!r}>"
