"""Ping-pong: two agents exchange messages through their mailboxes.

Run it as a script. With `CUEAPI_API_KEY` (and optionally `CUEAPI_BASE_URL`)
set it talks to that CueAPI; without them it starts the embedded server in
this process, so it needs nothing else:

    python examples/ping_pong.py

Alice sends "ping 1"; Bob answers each ping with a pong (a reply to a plain
message is an ordinary message back to the sender, in the same thread), and
Alice pings again, until three rounds are done. Every message is an
execution in CueAPI, closed by an outcome: the last lines show them.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message

ROUNDS = 3


@contextlib.contextmanager
def connect() -> Iterator[CueClient]:
    """A client for $CUEAPI_BASE_URL / $CUEAPI_API_KEY, or for an embedded server."""
    if os.environ.get("CUEAPI_API_KEY"):
        with CueClient() as client:
            yield client
        return
    from cuemsg.testing import run_server

    with run_server(db=":memory:") as srv, CueClient(srv.api_key, srv.base_url) as client:
        yield client


def main() -> None:
    with connect() as client:
        alice = Mailbox.open(client, "alice", poll_wait=1)
        bob = Mailbox.open(client, "bob", poll_wait=1)

        def bob_answers(msg: Message[str]) -> None:
            print(f"bob   <- {msg.body!r} (thread {msg.thread})")
            msg.reply(msg.body.replace("ping", "pong"))

        server = threading.Thread(target=bob.serve, args=(bob_answers,), kwargs={"type": str})
        server.start()

        print(f"alice -> 'ping 1' to bob ({bob.address})")
        alice.send(bob.address, "ping 1", thread="rally")
        for pong in alice.receive(wait=10, limit=ROUNDS, type=str):
            print(f"alice <- {pong.body!r} from {pong.sender == bob.address and 'bob'}")
            n = int(pong.body.split()[1])
            if n < ROUNDS:
                print(f"alice -> 'ping {n + 1}'")
                alice.send(bob.address, f"ping {n + 1}", thread="rally")

        bob.stop()
        server.join()
        print("records:")
        for box in (bob, alice):
            for exe in reversed(client.executions.list(cue_id=box.address).executions):
                body = (exe.payload or {}).get("message")
                outcome = exe.outcome or {}
                print(
                    f"  {box.name:<5} {body!r:<10} {exe.status:<8} claimed by "
                    f"{exe.claimed_by_worker} ({exe.attempts} attempt): {outcome.get('result')}"
                )
        alice.close()
        bob.close()
        print(f"done: {ROUNDS} rounds")


if __name__ == "__main__":
    main()
