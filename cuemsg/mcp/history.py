"""The record of one mailbox's messages, in and out, read back from executions.

Every message is a CueAPI execution that keeps its payload (the envelope),
who claimed it, how many times, and its outcome; a request's outcome names
the execution of its reply. This module turns those executions into plain
records for the `message_history` tool: the executions on the mailbox's own
cue are the messages in, those whose envelope names it as the sender are
the messages out.

One thread's record is the library's (`AsyncMailbox.history`), which reads
the cues of the thread's participants; it is asked to read every mailbox's
cue too, so what this agent sent before a restart is found. With no thread,
no route filters executions by sender, so the tenant's executions are
scanned newest first: the recent past (up to `SCAN_LIMIT` executions),
which is what an agent asks about.
"""

from __future__ import annotations

from typing import Any

from cuemsg._exceptions import EnvelopeError
from cuemsg.cueapi import AsyncCueClient
from cuemsg.cueapi.models import Execution
from cuemsg.envelope import decode_payload
from cuemsg.mailbox import AsyncMailbox, ThreadEntry
from cuemsg.mcp.resolve import Directory, MailboxEntry

__all__ = ["SCAN_LIMIT", "message_history", "thread_history"]

#: The most executions one history call reads (newest first).
SCAN_LIMIT = 2000
_PAGE = 100


async def message_history(
    client: AsyncCueClient,
    directory: Directory,
    me: MailboxEntry,
    *,
    thread: str | None = None,
    limit: int = 20,
) -> list[dict[str, Any]]:
    """The `limit` most recent messages in and out of `me` (or of one `thread`), newest first."""
    records: list[dict[str, Any]] = []
    offset = 0
    while len(records) < limit and offset < SCAN_LIMIT:
        page = await client.executions.list(limit=_PAGE, offset=offset)
        for exe in page.executions:
            record = await _record(exe, directory, me, thread)
            if record is not None:
                records.append(record)
                if len(records) == limit:
                    break
        offset += len(page.executions)
        if not page.executions or offset >= page.total:
            break
    return records


async def thread_history(
    mailbox: AsyncMailbox, directory: Directory, thread: str, *, limit: int = 20
) -> list[dict[str, Any]]:
    """The `limit` most recent messages of `thread` in and out of `mailbox`, newest first."""
    peers = [cue.id for cue in await directory.cues()]
    entries = await mailbox.history(thread, limit=limit, peers=peers)
    return [await _thread_record(entry, thread, directory) for entry in reversed(entries)]


async def _thread_record(entry: ThreadEntry, thread: str, directory: Directory) -> dict[str, Any]:
    """A thread entry as the same record `_record` makes of an execution."""
    settled = entry.status in ("success", "failed")
    success = entry.status == "success"
    return {
        "direction": entry.direction,
        "message_id": entry.id,
        "kind": entry.kind,
        "from": {
            "name": entry.sender_name or await directory.name_of(entry.sender),
            "address": entry.sender,
        },
        "to": {"name": await directory.name_of(entry.cue_id), "address": entry.cue_id},
        "thread": thread,
        "sent_at": entry.sent_at.isoformat() if entry.sent_at else None,
        "body": entry.body,
        "correlation_id": entry.correlation_id,
        "execution_id": entry.execution_id,
        "status": entry.status,
        "attempts": entry.attempts,
        "claimed_by": entry.claimed_by,
        "outcome": {
            "success": success,
            "result": entry.outcome_text if success else None,
            "error": None if success else entry.outcome_text,
            "state": entry.outcome,
        }
        if settled
        else None,
        "reply_execution_id": entry.reply_execution_id,
    }


async def _record(
    exe: Execution, directory: Directory, me: MailboxEntry, thread: str | None
) -> dict[str, Any] | None:
    """`exe` as a history record, or None when it is not `me`'s (or not in `thread`)."""
    try:
        env = decode_payload(exe.payload or {})
    except EnvelopeError:
        env = None
    meta = env.meta if env is not None else None
    sender = meta.sender if meta is not None else None
    if exe.cue_id == me.address:
        direction = "in"
    elif sender == me.address:
        direction = "out"
    else:
        return None
    msg_thread = meta.thread if meta is not None else None
    if thread is not None and msg_thread != thread:
        return None
    outcome = exe.outcome or {}
    state = (outcome.get("metadata") or {}).get("cuemsg") or {}
    return {
        "direction": direction,
        "message_id": meta.id if meta is not None else f"exec:{exe.id}",
        "kind": meta.kind if meta is not None else "message",
        "from": {"name": await directory.name_of(sender), "address": sender},
        "to": {"name": await directory.name_of(exe.cue_id), "address": exe.cue_id},
        "thread": msg_thread,
        "sent_at": meta.sent_at.isoformat() if meta is not None and meta.sent_at else None,
        "body": env.message if env is not None else exe.payload,
        "correlation_id": meta.correlation_id if meta is not None else None,
        "execution_id": exe.id,
        "status": exe.status,
        "attempts": exe.attempts,
        "claimed_by": exe.claimed_by_worker,
        "outcome": _outcome(outcome),
        "reply_execution_id": state.get("reply_execution_id"),
    }


def _outcome(outcome: dict[str, Any]) -> dict[str, Any] | None:
    if not outcome:
        return None
    return {
        "success": outcome.get("success"),
        "result": outcome.get("result"),
        "error": outcome.get("error"),
        "state": ((outcome.get("metadata") or {}).get("cuemsg") or {}).get("state"),
    }
