"""Run as a script by test_redelivery: serve one mailbox and die hard on the first message.

Usage: _dying_receiver.py BASE_URL API_KEY NAME DEDUPE_PATH MODE RUNS_LOG

MODE `mid_handler`: the process exits while its handler runs (nothing recorded).
MODE `after_handling`: the handler finishes (and a request's reply is sent), the
message id is recorded in the SQLite dedupe file, then the process exits before
its ack reaches the server. MODE `batch`: `receive(batch=10)` and exit while the
fifth message is in hand: four acks decided but not yet recorded, five messages
claimed but not yet yielded. `os._exit` skips every cleanup: a real crash.
MODE `receive_ack`: a `receive()` loop is SIGKILLed when it decides the first
message's ack (its id just recorded in the dedupe file), before the claim that
carries the ack (`claim.settle`) or the ack's own request is sent.
MODE `prefetch`: the default `receive()` (which prefetches) is SIGKILLed while the
fifth message is in hand: four acks decided but not yet recorded, the rest of the
backlog claimed ahead and held, none of it given back.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message, SQLiteDedupe


class KilledAfterRecording(SQLiteDedupe):
    """A dedupe store whose process is SIGKILLed right after it records a message."""

    def remember(self, key: str, reply: bytes | None = None) -> None:
        super().remember(key, reply)
        os.kill(os.getpid(), signal.SIGKILL)


class CrashAfterRecording(SQLiteDedupe):
    """A dedupe store that crashes the process right after it records a message."""

    def remember(self, key: str, reply: bytes | None = None) -> None:
        super().remember(key, reply)
        os._exit(3)


def main() -> None:
    base_url, api_key, name, dedupe_path, mode, runs_log = sys.argv[1:]
    client = CueClient(api_key, base_url)
    store = {"after_handling": CrashAfterRecording, "receive_ack": KilledAfterRecording}.get(
        mode, SQLiteDedupe
    )(dedupe_path)
    mailbox = Mailbox.open(client, name, worker_id="doomed", poll_wait=0.3, dedupe=store)

    if mode == "receive_ack":
        for msg in mailbox.receive(wait=20):
            with open(runs_log, "a") as log:
                log.write(f"{msg.id}\n")
        sys.exit("the receiver was expected to be killed deciding its first ack")

    if mode == "prefetch":
        for n, msg in enumerate(mailbox.receive(wait=20), 1):
            with open(runs_log, "a") as log:
                log.write(f"{msg.id}\n")
            if n == 5:
                os.kill(os.getpid(), signal.SIGKILL)
        sys.exit("the receiver was expected to be killed on its fifth message")

    if mode == "batch":
        for n, msg in enumerate(mailbox.receive(wait=20, batch=10), 1):
            with open(runs_log, "a") as log:
                log.write(f"{msg.id}\n")
            if n == 5:
                os._exit(3)
        sys.exit("the receiver was expected to die on its fifth message")

    def handler(msg: Message[Any]) -> Any:
        with open(runs_log, "a") as log:
            log.write(f"{msg.id}\n")
        if mode == "mid_handler":
            os._exit(3)
        return {"handled": msg.body}

    mailbox.serve(handler, idle_timeout=20)
    sys.exit("the receiver was expected to die on its first message")


if __name__ == "__main__":
    main()
