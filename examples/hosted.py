"""The same mailbox code against the hosted CueAPI, or the embedded server.

    CUEAPI_API_KEY=cue_sk_... python examples/hosted.py            # api.cueapi.ai
    CUEAPI_API_KEY=... CUEAPI_BASE_URL=https://... python examples/hosted.py
    python examples/hosted.py                                       # embedded server

Nothing in the mailbox code changes between the two: the client probes the
server once (`GET /v1/info`) and uses the embedded server's extensions
(long-poll claims, batches) only when they are listed; against the hosted
service it keeps to the plain contract (list + claim by id, polling). The
hosted service limits requests per key (60 a minute by default): this script
makes a few dozen, and the client waits out a 429 by its `Retry-After`.

Mailbox names are fixed, so a second run reuses the same two cues (opening
is get-or-create).
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message


@contextlib.contextmanager
def connect() -> Iterator[CueClient]:
    """A client for $CUEAPI_BASE_URL / $CUEAPI_API_KEY, or for an embedded server."""
    if os.environ.get("CUEAPI_API_KEY"):
        with CueClient() as client:  # reads CUEAPI_API_KEY and CUEAPI_BASE_URL
            print(f"using {client.base_url}")
            yield client
        return
    from cuemsg.testing import run_server

    with run_server(db=":memory:") as srv, CueClient(srv.api_key, srv.base_url) as client:
        print(f"no CUEAPI_API_KEY: using an embedded server at {srv.base_url}")
        yield client


def main() -> None:
    with connect() as client:
        extensions = sorted(client.extensions)
        print(f"server extensions: {', '.join(extensions) if extensions else 'none (plain)'}")
        agent = Mailbox.open(client, "cuemsg-example-agent", poll_wait=5)
        helper = Mailbox.open(client, "cuemsg-example-helper", poll_wait=5)
        print(f"agent {agent.address}, helper {helper.address}")

        sent = agent.send(helper.address, {"note": "hello from the agent"})
        for msg in helper.receive(wait=30, limit=1):
            print(f"helper got {msg.body} from {msg.sender} (execution {msg.execution_id})")

        def answer(msg: Message[dict[str, int]]) -> int:
            return msg.body["a"] + msg.body["b"]

        serving = threading.Thread(target=helper.serve, args=(answer,))
        serving.start()
        total = agent.request(helper.address, {"a": 2, "b": 3}, timeout=60)
        print(f"agent asked 2 + 3, helper answered {total}")
        helper.stop()
        serving.join()

        exe = client.executions.get(sent.execution_id)
        print(
            f"record of the first message: {exe.status}, claimed by {exe.claimed_by_worker}, "
            f"outcome {(exe.outcome or {}).get('result')!r}"
        )
        agent.close()
        helper.close()
        print(f"{client.request_count} HTTP requests in all")


if __name__ == "__main__":
    main()
