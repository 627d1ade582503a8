"""The record of one mailbox's messages, in and out, read back from executions.

Every message is a CueAPI execution that keeps its payload (the envelope),
who claimed it, how many times, and its outcome; a request's outcome names
the execution of its reply. This module turns those executions into plain
records for the `message_history` tool: the executions on the mailbox's own
cue are the messages in, those whose envelope names it as the sender are
the messages out. It scans the tenant's executions newest first, so it
sees the recent past (up to `SCAN_LIMIT` executions), which is what an
agent asks about.
"""

from __future__ import annotations

from typing import Any

from cuemsg._exceptions import EnvelopeError
from cuemsg.cueapi import AsyncCueClient
from cuemsg.cueapi.models import Execution
from cuemsg.envelope import decode_payload
from cuemsg.mcp.resolve import Directory, MailboxEntry

__all__ = ["SCAN_LIMIT", "message_history"]

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
