"""The mailbox core's state (`CoreState`): what every flow reads, and shared helpers.

The flows build on it in layers, each a mixin module: `_send`, `_settle`,
`_receive`, then `_serve` and `_request`; `_core.MailboxCore` joins them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

from cuemsg._exceptions import CuemsgError, LeaseLost
from cuemsg.cueapi.models import OutcomeRequest
from cuemsg.envelope import outcome_metadata
from cuemsg.mailbox._config import MailboxConfig, MailboxInfo
from cuemsg.mailbox._leases import AckQueue, LeaseBook, Presence
from cuemsg.mailbox._ops import Flow
from cuemsg.mailbox._records import Delivery, MailboxStats, MessageFactory
from cuemsg.mailbox._replies import Event, ReplyRouter
from cuemsg.mailbox._thread_state import ThreadGate, ThreadPeers
from cuemsg.mailbox.dedupe import DedupeStore, MemoryDedupe
from cuemsg.mailbox.names import AddressBook, MailboxAddress

log = logging.getLogger("cuemsg.mailbox")
T = TypeVar("T")


class CoreState:
    """The state every flow reads and a few helpers; the flows are mixed in on top.

    Args:
        info: where the mailbox lives.
        config: its options.
        event_factory: makes the events a waiting request is woken by.
        make_message: builds the message objects handed to user code.
        clock: wall-clock time (UNIX seconds): expiry, timestamps.
        monotonic: a monotonic clock: deadlines and intervals.
    """

    def __init__(
        self,
        info: MailboxInfo,
        config: MailboxConfig,
        *,
        event_factory: Callable[[], Event],
        make_message: MessageFactory = Delivery,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.info = info
        self.config = config
        self.clock = clock
        self.monotonic = monotonic
        self.make_message = make_message
        self.leases = LeaseBook()
        self.acks = AckQueue()
        self.router = ReplyRouter(event_factory)
        # Acks of claimed replies, recorded together (`flush_reply_acks`) by this time.
        self.reply_acks: list[OutcomeRequest] = []
        self.reply_acks_due = 0.0
        self.presence = Presence(config.presence_interval)
        self.stats = MailboxStats()
        self.dedupe: DedupeStore = config.dedupe if config.dedupe is not None else MemoryDedupe()
        self.threads = ThreadGate()  # serve(on_busy=...): busy threads and their queues
        self.thread_peers = ThreadPeers()  # history(): where this process sent each thread
        self.stopping = False  # receive/serve loops end after their current poll
        # Claimed ahead by receive() and not handed out yet: given back when the loop ends.
        self.prefetched: dict[str, None] = {}
        # serve() with `claim.settle`: the loop's next claim carries the acks, unless it
        # is parked in a claim already (then the last handler to end records them).
        self.carry_acks = False
        self.serve_claiming = False
        self.closing = False  # background loops end too
        self._tasks: dict[str, str] = {}  # cue id -> its task (require_responder)
        self.addresses = AddressBook(MailboxAddress(info.name, info.address, info.task))
        self._sender_keys: dict[str, str | None] = {}  # cue id -> its public key (_signed)
        self._handling = 0  # handle() flows running (serve): the last to end flushes acks
        self._handling_lock = threading.Lock()

    # -- helpers ---------------------------------------------------------------------------

    def remember_peer(self, thread: str | None, cue_id: str) -> None:
        """Note that a message of `thread` went to `cue_id` (`history` looks there too)."""
        if thread is not None:
            self.thread_peers.add(thread, cue_id)

    def _dedupe_key(self, message_id: str) -> str:
        return f"{self.info.address}/{message_id}"

    def _meta_state(self, state: str, **extra: Any) -> dict[str, Any]:
        return outcome_metadata(state, **extra)

    def _lease_lost(
        self, execution_id: str, message_id: str | None, why: BaseException
    ) -> LeaseLost:
        if self.leases.mark_lost(execution_id, why) or execution_id not in self.leases:
            self.stats.count("redelivered")
        what = (
            f"message {message_id} (execution {execution_id})"
            if message_id
            else (f"execution {execution_id}")
        )
        err = LeaseLost(
            f"lost the lease on {what}: {why}; it was not acked here and will be delivered again"
        )
        log.warning("%s", err)
        return err

    def backoff(self, attempt: int) -> float:
        """The delay of the retry-later after `attempt` failed (doubling)."""
        return float(self.config.retry_delay * 2 ** max(attempt - 1, 0))

    def _quiet(self, flow: Flow[T]) -> Flow[T | None]:
        """Run `flow`, logging (not raising) what goes wrong: a loop must go on."""
        try:
            return (yield from flow)
        except LeaseLost:
            return None  # logged and counted where it was raised
        except CuemsgError as exc:
            log.warning("%s", exc)
            return None

    def _poll(self, deadline: float | None) -> float:
        if deadline is None:
            return self.config.poll_wait
        return max(0.0, min(self.config.poll_wait, deadline - self.monotonic()))
