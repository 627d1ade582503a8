"""`run_demo()`: what `cuemsg demo` shows, in a few seconds, with nothing to set up.

It starts the embedded server in this process (a SQLite file in a temporary
directory), opens two agents' mailboxes, and walks through a message and its
reply, an RPC call, an error reply and a dead letter; then it prints each
message's execution record from CueAPI: who claimed it, how many attempts,
and its outcome.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cuemsg._exceptions import RemoteError
from cuemsg.cueapi import CueClient
from cuemsg.cueapi.models import Execution
from cuemsg.envelope import body_of, meta_of
from cuemsg.mailbox.sync import Mailbox, Message

__all__ = ["run_demo"]

Out = Callable[[str], Any]


def _writer_handler(out: Out) -> Callable[[Message[Any]], Any]:
    def handle(msg: Message[Any]) -> Any:
        body = msg.body
        if msg.is_request:
            if body.get("op") == "explode":
                raise ValueError("the writer cannot do that")
            words = len(str(body.get("text", "")).split())
            out(f"  writer: counted {words} words for the planner")
            return {"words": words}
        if isinstance(body, str) and body.startswith("%%%"):
            out(f"  writer: cannot read {body!r}: rejecting it (a dead letter)")
            msg.reject("unreadable instructions")
            return None
        out(f"  writer: got {body!r}; replying")
        msg.reply(f"done: {body}")
        return None

    return handle


def _describe(exe: Execution, names: dict[str, str]) -> str:
    payload = exe.payload or {}
    meta = meta_of(payload) or {}
    kind = meta.get("kind", "message")
    body = repr(body_of(payload))
    if len(body) > 34:
        body = body[:31] + "..."
    outcome = exe.outcome or {}
    said = outcome.get("result") or outcome.get("error") or "-"
    if len(said) > 70:
        said = said[:67] + "..."
    return (
        f"  {names.get(exe.cue_id or '', '?'):<8} {kind:<8} {body:<35} {exe.status:<8} "
        f"by {exe.claimed_by_worker or '-'}, {exe.attempts} attempt(s): {said}"
    )


def run_demo(out: Out = print) -> None:
    """Run the demo against a fresh embedded server, writing its narration with `out`.

    Args:
        out: called with each line of output (default `print`).
    """
    from cuemsg.testing import run_server

    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="cuemsg-demo-") as tmp:
        db = str(Path(tmp) / "demo.db")
        with run_server(db=db) as srv, CueClient(srv.api_key, srv.base_url) as client:
            out(f"embedded CueAPI server at {srv.base_url} (SQLite {db})")
            planner = Mailbox.open(client, "planner", worker_id="planner-1", poll_wait=0.5)
            writer = Mailbox.open(client, "writer", worker_id="writer-1", poll_wait=0.5)
            names = {planner.address: "planner", writer.address: "writer"}
            out(f"mailboxes: planner {planner.address}, writer {writer.address}")
            serving = threading.Thread(target=writer.serve, args=(_writer_handler(out),))
            serving.start()
            try:
                out("1. two agents exchange messages")
                out("  planner: sending 'draft the intro'")
                planner.send(writer.address, "draft the intro", thread="article-1")
                for reply in planner.receive(wait=10, limit=1):
                    out(f"  planner: got {reply.body!r} (thread {reply.thread})")

                out("2. an RPC call")
                text = "agents hand each other work"
                answer = planner.request(writer.address, {"op": "count", "text": text}, timeout=10)
                out(f"  planner: the writer says {answer}")

                out("3. an error reply")
                try:
                    planner.request(writer.address, {"op": "explode"}, timeout=10)
                except RemoteError as err:
                    out(f"  planner: RemoteError {err.type}: {err.message}")

                out("4. a dead letter")
                garbled = planner.send(writer.address, "%%% garbled instructions")
                # Let the writer settle it before it stops (a stop ends its loop at once).
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    status = client.executions.get(garbled.execution_id).status
                    if status not in ("pending", "retry_ready", "delivering"):
                        break
                    time.sleep(0.02)
            finally:
                writer.stop()
                serving.join()
            planner.close()
            writer.close()

            out("5. every message's record in CueAPI (cue, kind, body, status, claim, outcome):")
            executions = [
                exe
                for address in (writer.address, planner.address)
                for exe in client.executions.list(cue_id=address, limit=100).executions
            ]
            executions.sort(key=lambda e: e.created_at or "")
            for exe in executions:
                out(_describe(exe, names))
            dead = client.executions.list(status="failed").executions
            out(
                f"dead letters (failed executions): {len(dead)}; "
                f"done in {time.monotonic() - started:.1f}s"
            )
