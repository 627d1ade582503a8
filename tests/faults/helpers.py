"""What the fault tests share: `cuemsg serve` as a real process that can be
SIGKILLed and restarted on the same database and port, and `Traffic`, a sender
and a receiver (mailboxes in threads) that keep going through the faults and
count what arrived."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from cuemsg import CuemsgError
from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message
from cuemsg.testing import free_port

POLL = 1.0  # the receiver's long-poll wait (seconds)


class ServerProcess:
    """`python -m cuemsg serve` on `db`, on one port across restarts."""

    def __init__(self, db: str, log: Path, *options: str) -> None:
        self.db = db
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.options = options
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        argv = ["-m", "cuemsg", "serve", "--db", self.db, "--port", str(self.port)]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, *argv, *self.options],
                stdout=log,
                stderr=log,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.starts += 1
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"cuemsg serve exited: {self.log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{self.base_url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"cuemsg serve did not answer in 30 s: {self.log.read_text()[-2000:]}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush, leases left held, requests cut mid-way."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def register(self) -> str:
        answer = httpx.post(f"{self.base_url}/v1/auth/register", json={"email": "f@example.com"})
        answer.raise_for_status()
        return str(answer.json()["api_key"])


class Traffic:
    """A sender sending `total` numbered messages to a receiver, both riding out faults.

    The sender's client retries a fire under the same message id; should it
    give up, the sender sends again (a new message id: a duplicate number is
    possible when the failed send had in fact landed, and is counted as a
    resend). The receiver's mailbox rides out errors itself. `handled` maps
    each message id to the times the handler ran for it (dedupe keeps it at 1).
    """

    def __init__(self, base_url: str, key: str, total: int, *, pace: float = 0.005) -> None:
        self.total = total
        self.pace = pace
        self._base_url, self._key = base_url, key
        self.sent = 0
        self.resends = 0
        self.handled: collections.Counter[str] = collections.Counter()
        self.numbers: collections.Counter[int] = collections.Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._all_in = threading.Event()
        # Enough retries to outlast a restart: a retried fire keeps its message id
        # (the idempotency key), so the outage makes no duplicate.
        self._sender_client = CueClient(key, base_url, max_retries=30)
        self._receiver_client = CueClient(key, base_url)
        self.inbox = Mailbox.open(self._receiver_client, "inbox", poll_wait=POLL)
        self.outbox = Mailbox.open(self._sender_client, "outbox", poll_wait=POLL)
        self._threads = [
            threading.Thread(target=self._send_all, name="sender", daemon=True),
            threading.Thread(target=self._receive, name="receiver", daemon=True),
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def _send_all(self) -> None:
        for n in range(self.total):
            for _ in range(200):  # bounded: ~100 s of failures at most
                try:
                    self.outbox.send(self.inbox.address, {"n": n})
                    break
                except CuemsgError as exc:
                    self.resends += 1
                    self.errors.append(f"send {n}: {exc}")
                    time.sleep(0.5)
            self.sent = n + 1
            time.sleep(self.pace)

    def _handle(self, msg: Message[Any]) -> None:
        with self._lock:
            self.handled[msg.id] += 1
            self.numbers[msg.body["n"]] += 1
            if len(self.numbers) == self.total:
                self._all_in.set()

    def _receive(self) -> None:
        self.inbox.serve(self._handle)

    def wait_sent(self, count: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.sent < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.sent >= count, f"only {self.sent} of {count} sent in {timeout}s"

    def finish(self, timeout: float = 90) -> None:
        """Wait until every number arrived (or the timeout), then stop both."""
        self._all_in.wait(timeout)
        self.inbox.stop()
        for thread in self._threads:
            thread.join(timeout=30)
        self.inbox.close()
        self.outbox.close()
        self._sender_client.close()
        self._receiver_client.close()

    def _redelivered(self) -> int:
        """Executions of the inbox claimed more than once (a fault cut their first lease)."""
        answer = httpx.get(
            f"{self._base_url}/v1/executions",
            params={"cue_id": self.inbox.address, "limit": 1000},
            headers={"Authorization": f"Bearer {self._key}"},
        )
        answer.raise_for_status()
        return sum(1 for e in answer.json()["executions"] if e["attempts"] > 1)

    def check(self) -> dict[str, int]:
        """Assert 0 lost and 0 handled twice; the counts, for the report."""
        missing = sorted(set(range(self.total)) - set(self.numbers))
        assert not missing, f"lost {len(missing)} messages: {missing[:20]}"
        twice = {mid: n for mid, n in self.handled.items() if n > 1}
        assert not twice, f"handled more than once: {twice}"
        repeated = sum(n - 1 for n in self.numbers.values())
        assert repeated <= self.resends, (repeated, self.resends)
        return {
            "sent": self.total,
            "received": len(self.numbers),
            "redelivered": self._redelivered(),
            "handled_twice": len(twice),
            "resends": self.resends,
            "duplicate_numbers": repeated,
        }
