"""A mailbox's configuration: its options, where it lives, and the defaults."""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from cuemsg.mailbox.dedupe import DedupeStore
from cuemsg.signing import SigningKey

# -- defaults -------------------------------------------------------------------------------

#: Longest single claim long-poll of a receive/serve/reply loop (seconds). A
#: graceful `stop()` takes effect when the current poll returns, so this bounds it.
DEFAULT_POLL_WAIT = 5.0
#: Retry-later re-fires of one message before it is rejected for good.
DEFAULT_MAX_ATTEMPTS = 5
#: Claims of one execution (the cue's `retry.max_attempts`): a message whose
#: receivers keep dying is failed by the server after this many lease expiries.
DEFAULT_MAX_DELIVERIES = 5
#: `request()` deadline when none is given (seconds).
DEFAULT_REQUEST_TIMEOUT = 30.0
#: How often a receiving mailbox tells the server it is alive (`POST /v1/worker/heartbeat`).
DEFAULT_PRESENCE_INTERVAL = 15.0
#: A worker that heartbeated within this many seconds counts as alive (`require_responder`).
DEFAULT_PRESENCE_TTL = 60.0
#: First delay of a retry-later made by `on_error="retry"`; doubles per attempt.
DEFAULT_RETRY_DELAY = 1.0
#: Lease assumed when a claim answer does not state one (the hosted default).
FALLBACK_LEASE_SECONDS = 900.0
#: Replies claimed per request of the reply loop.
REPLY_BATCH = 50
#: Longest wait of a claimed reply's ack before it is recorded (seconds): the acks
#: of one-at-a-time requests go in one `report_outcomes` per this, not one per call.
REPLY_ACK_DELAY = 0.5
#: Messages claimed at most per request of `serve` (bounded by free handler slots).
SERVE_BATCH = 50
#: The default `prefetch=` of `receive()` and `serve()`: messages one claim takes at
#: most when it finds a backlog (with none it takes the one that comes, at once). Held
#: messages keep their leases; 20 amortizes the claims of a backlog (one request per
#: 20 messages) without holding so many that a slow receiver starves its peers.
PREFETCH = 20
#: Longest wait of an ack made by `serve()` before it is recorded (seconds): acks of
#: handlers that finish within this of each other go in one `report_outcomes`.
SERVE_ACK_DELAY = 0.05
#: Longest wait of an ack made by a prefetching `receive()` when the caller is slow to get
#: through the batch (seconds); otherwise the batch's acks go before the next claim.
RECEIVE_ACK_DELAY = 1.0
#: Acks recorded at once, at most, before `serve()` flushes without waiting.
ACK_BATCH = 50
#: Acks one claim carries at most (`claim.settle`; the server's bound is 100).
ACK_CARRY = 100
#: Reports of a batch of acks that fail in transit before those acks are given up
#: (their messages are then delivered again; a dedupe store acks them as duplicates).
ACK_TRIES = 3
#: Replies bigger than this are not kept for re-sending on a duplicate request.
MAX_CACHED_REPLY = 64 * 1024
#: Pause after a transient error of a loop (doubled up to 5 s).
ERROR_PAUSE = 0.2
#: `result` and `error` of an outcome are cut to this many characters (docs/cueapi.md).
OUTCOME_TEXT_LIMIT = 2000

#: The mailbox cue's schedule: `recurring` (a `once` cue completes after its
#: first outcome and would stop taking fires), on a cron that fires once a year,
#: and the cue is paused at once, so it never fires on its own; manual fires
#: work whatever the cue's status (docs/cueapi.md, Fire).
MAILBOX_SCHEDULE: dict[str, Any] = {"type": "recurring", "cron": "0 0 1 1 *", "timezone": "UTC"}
#: Replies to a mailbox's requests come on the same cue with this task suffix.
REPLY_SUFFIX = ".replies"
#: The key of the mailbox cue's payload where serving workers stamp their presence
#: on servers without the `workers.list` extension.
PRESENCE_KEY = "cuemsg_presence"

OnError = Literal["reject", "retry"]
TimeoutReason = Literal["no_responder", "dead_responder", "slow_responder", "unknown"]


@dataclass(frozen=True)
class MailboxInfo:
    """Where a mailbox lives: its cue, tasks and worker name."""

    name: str
    address: str
    task: str
    reply_task: str
    worker_id: str
    cue_payload: dict[str, Any]


@dataclass
class MailboxConfig:
    """A mailbox's options (see `Mailbox.open` for each)."""

    poll_wait: float = DEFAULT_POLL_WAIT
    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    max_deliveries: int = DEFAULT_MAX_DELIVERIES
    on_error: OnError = "reject"
    retry_delay: float = DEFAULT_RETRY_DELAY
    dedupe: DedupeStore | None = None
    on_late_reply: Callable[[Any], Any] | None = None
    presence_interval: float = DEFAULT_PRESENCE_INTERVAL
    presence_ttl: float = DEFAULT_PRESENCE_TTL
    signing_key: SigningKey | None = None
    require_signed: bool = False

    def __post_init__(self) -> None:
        if self.poll_wait <= 0:
            raise ValueError(f"poll_wait must be > 0, not {self.poll_wait}")
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, not {self.max_attempts}")
        if not 1 <= self.max_deliveries <= 10:
            raise ValueError(f"max_deliveries must be 1..10, not {self.max_deliveries}")
        if self.on_error not in ("reject", "retry"):
            raise ValueError(f"on_error must be 'reject' or 'retry', not {self.on_error!r}")
        if self.presence_interval <= 0:
            raise ValueError(f"presence_interval must be > 0, not {self.presence_interval}")


def default_worker_id(task: str) -> str:
    """`<task>@<host>:<pid>`: one name per process, so leases tell processes apart."""
    return f"{task}@{socket.gethostname()}:{os.getpid()}"
