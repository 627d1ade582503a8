"""A three-stage agent pipeline: research -> write -> edit, each stage replying to its caller.

    python examples/pipeline.py

The coordinator sends a request to the researcher. The researcher's handler
gathers notes and itself sends a request to the writer; the writer drafts and
asks the editor; the editor's reply flows back up the chain, each stage
replying to the one that asked it. Every hop is an execution with an outcome
that names its reply, so the whole chain can be read back from CueAPI: the
last lines print it.

Uses `CUEAPI_API_KEY` / `CUEAPI_BASE_URL` when set, else an embedded server.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any

from cuemsg.cueapi import CueClient
from cuemsg.mailbox import Mailbox, Message


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
        coordinator = Mailbox.open(client, "coordinator", poll_wait=1)
        researcher = Mailbox.open(client, "researcher", poll_wait=1)
        writer = Mailbox.open(client, "writer", poll_wait=1)
        editor = Mailbox.open(client, "editor", poll_wait=1)

        def research(msg: Message[dict[str, Any]]) -> dict[str, Any]:
            topic = msg.body["topic"]
            notes = [f"{topic} is old", f"{topic} is useful", f"{topic} has fans"]
            print(f"researcher: {len(notes)} notes on {topic!r}, asking the writer")
            draft = researcher.request(writer.address, {"notes": notes}, timeout=20)
            return {"topic": topic, **draft}

        def write(msg: Message[dict[str, Any]]) -> dict[str, Any]:
            text = ". ".join(n.capitalize() for n in msg.body["notes"]) + "."
            print(f"writer: drafted {len(text)} characters, asking the editor")
            edited = writer.request(editor.address, {"draft": text}, timeout=20)
            return {"draft": text, **edited}

        def edit(msg: Message[dict[str, Any]]) -> dict[str, Any]:
            final = msg.body["draft"].replace(" is ", " is truly ", 1)
            print("editor: edited the draft")
            return {"final": final}

        stages: list[tuple[Mailbox, Callable[[Message[Any]], Any]]] = [
            (researcher, research),
            (writer, write),
            (editor, edit),
        ]
        threads = [threading.Thread(target=box.serve, args=(fn,)) for box, fn in stages]
        for t in threads:
            t.start()

        print("coordinator: asking the researcher about 'tea'")
        article = coordinator.request(researcher.address, {"topic": "tea"}, timeout=30)
        print(f"coordinator: got {article['final']!r}")

        for box, _ in stages:
            box.stop()
        for t in threads:
            t.join()

        print("the chain, as CueAPI recorded it:")
        for box, _ in stages:
            [exe] = [
                e
                for e in client.executions.list(cue_id=box.address).executions
                if (e.payload or {}).get("task") == box.task  # not its replies
            ]
            meta = ((exe.outcome or {}).get("metadata") or {}).get("cuemsg", {})
            print(
                f"  {box.name:<10} request {exe.status:<7} by {exe.claimed_by_worker}: "
                f"{meta.get('state')}, reply execution {meta.get('reply_execution_id')}"
            )
        for box in (coordinator, researcher, writer, editor):
            box.close()


if __name__ == "__main__":
    main()
