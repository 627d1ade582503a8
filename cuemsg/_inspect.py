"""What the `cuemsg` CLI reads from CueAPI and how it prints it (internal).

The commands live in `cuemsg.cli`; this module finds mailboxes by name,
turns execution records into rows and records, and formats them as plain
text (tables and key/value blocks) or as JSON-ready dicts. It reads raw
payloads leniently: a record it cannot read as a cuemsg envelope is still
shown, as `foreign`.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Sequence
from typing import Any

from cuemsg._exceptions import NotFound
from cuemsg.cueapi import CueClient
from cuemsg.cueapi.models import Cue, Execution
from cuemsg.envelope import body_of, meta_of, outcome_meta_of, outside_fields

__all__ = [
    "PAGE",
    "CommandError",
    "Names",
    "all_cues",
    "dead_letter_lines",
    "executions",
    "find_mailbox",
    "is_mailbox",
    "mailbox_row",
    "message_row",
    "one_line",
    "record",
    "record_lines",
    "summary",
    "table",
]

#: Items asked for per page when the CLI lists cues or executions.
PAGE = 100
#: Outcome summaries in tables are cut to this many characters.
SUMMARY_WIDTH = 60


class CommandError(Exception):
    """An expected failure of a command: printed as one line, exit status `exit_code`."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


# -- finding mailboxes ------------------------------------------------------------------------


def all_cues(client: CueClient) -> Iterator[Cue]:
    """Every cue of the tenant, page by page."""
    offset = 0
    while True:
        page = client.cues.list(limit=PAGE, offset=offset)
        yield from page.cues
        offset += len(page.cues)
        if not page.cues or offset >= page.total:
            return


def is_mailbox(cue: Cue) -> bool:
    """A mailbox is a worker cue whose payload names its task."""
    return cue.transport == "worker" and isinstance(cue.payload.get("task"), str)


def find_mailbox(client: CueClient, to: str, names: Names | None = None) -> Cue:
    """The mailbox cue `to` names: a cue id (`cue_...`) or a mailbox name.

    Raises:
        CommandError: no cue has that name, or the cue is not a mailbox.
        NotFound: no cue has that id.
    """
    cue: Cue | None = None
    seen: list[str] = []
    if to.startswith("cue_"):
        cue = client.cues.get(to)
    else:
        for candidate in all_cues(client):
            if names is not None:
                names.learn(candidate)
            if candidate.name == to:
                cue = candidate
                break
            if is_mailbox(candidate):
                seen.append(candidate.name)
    if cue is None:
        near = difflib.get_close_matches(to, seen, n=3)
        hint = f"did you mean {', '.join(repr(n) for n in near)}? " if near else ""
        raise CommandError(
            f"no mailbox named {to!r} ({hint}`cuemsg inspect mailboxes` lists them; "
            "a cue id `cue_...` works too)"
        )
    if not is_mailbox(cue):
        raise CommandError(
            f"the cue {cue.name!r} ({cue.id}) is not a mailbox: a {cue.transport} cue "
            "with no payload task"
        )
    return cue


class Names:
    """Mailbox names by address, looked up once each (`-` when unknown)."""

    def __init__(self, client: CueClient) -> None:
        self._client = client
        self._names: dict[str, str | None] = {}

    def learn(self, cue: Cue) -> None:
        self._names[cue.id] = cue.name

    def learn_all(self, cues: Sequence[Cue]) -> None:
        for cue in cues:
            self.learn(cue)

    def name(self, address: str | None) -> str | None:
        """The name of the cue at `address`, or None (no such cue, or no address)."""
        if not address:
            return None
        if address not in self._names:
            try:
                self._names[address] = self._client.cues.get(address).name
            except NotFound:
                self._names[address] = None
        return self._names[address]

    def label(self, address: str | None) -> str:
        """`name` when known, else the address, else `-`."""
        if not address:
            return "-"
        return self.name(address) or address

    def long_label(self, address: str | None) -> str:
        """`address (name)` when the name is known."""
        if not address:
            return "-"
        name = self.name(address)
        return f"{address} ({name})" if name else address


# -- reading records ---------------------------------------------------------------------------


def executions(
    client: CueClient, *, cue_id: str | None, status: str | None, limit: int
) -> list[Execution]:
    """Up to `limit` executions, newest first, paging as needed."""
    found: list[Execution] = []
    while len(found) < limit:
        page = client.executions.list(
            cue_id=cue_id, status=status, limit=min(PAGE, limit - len(found)), offset=len(found)
        )
        found.extend(page.executions)
        if not page.executions or len(found) >= page.total:
            break
    return found[:limit]


def _meta(exe: Execution) -> dict[str, Any] | None:
    return meta_of(exe.payload)


def _kind(exe: Execution) -> str:
    meta = _meta(exe)
    if meta is None:
        return "foreign"
    return str(meta.get("kind") or "message")


def one_line(text: str, width: int | None = None) -> str:
    """`text` on one line, cut to `width` characters with `...`."""
    flat = " ".join(text.split())
    if width is not None and len(flat) > width:
        return flat[: width - 3] + "..."
    return flat


def summary(exe: Execution) -> str:
    """What became of an execution, in a few words: its outcome's text, or why none."""
    outcome = exe.outcome
    if outcome:
        said = outcome.get("result") if outcome.get("success") else outcome.get("error")
        said = said or outcome.get("result") or outcome.get("error")
        return str(said) if said else ("success" if outcome.get("success") else "failure")
    if exe.status == "failed":
        return (
            f"no outcome: failed after {exe.attempts} claim(s) whose lease ran out "
            "(receivers crashed or hung)"
        )
    if exe.status == "missed":
        return "no outcome: nobody claimed it in time"
    return "-"


def mailbox_row(cue: Cue) -> dict[str, Any]:
    """One mailbox, for `inspect mailboxes`."""
    return {
        "name": cue.name,
        "address": cue.id,
        "task": cue.payload.get("task"),
        "fired_count": cue.fired_count,
        "status": cue.status,
        "created_at": cue.created_at,
    }


def message_row(exe: Execution, names: Names) -> dict[str, Any]:
    """One execution as a message, for `inspect messages` and `inspect dead-letters`."""
    meta = _meta(exe) or {}
    sender = meta.get("sender")
    return {
        "execution_id": exe.id,
        "message_id": meta.get("id"),
        "kind": _kind(exe),
        "mailbox": names.name(exe.cue_id),
        "cue_id": exe.cue_id,
        "task": exe.task,
        "sender": sender,
        "sender_name": names.name(sender) if isinstance(sender, str) else None,
        "thread": meta.get("thread"),
        "status": exe.status,
        "attempts": exe.attempts,
        "claimed_by": exe.claimed_by_worker,
        "created_at": exe.created_at,
        "summary": summary(exe),
        "outcome": exe.outcome,
    }


def record(client: CueClient, execution_id: str, *, follow: bool = True) -> dict[str, Any]:
    """One message's full record: the execution, its envelope and body, and its reply's record.

    The reply is the execution a request's outcome names
    (`outcome.metadata.cuemsg.reply_execution_id`), read too when `follow`.

    Raises:
        NotFound: no such execution.
    """
    exe = client.executions.get(execution_id)
    payload = exe.payload or {}
    found: dict[str, Any] = {
        "execution": exe.raw or {"id": exe.id},
        "envelope": _meta(exe),
        "body": body_of(payload),
        "reply_execution_id": None,
        "reply": None,
    }
    reply_id = outcome_meta_of(exe.outcome).get("reply_execution_id")
    if isinstance(reply_id, str):
        found["reply_execution_id"] = reply_id
        if follow:
            try:
                found["reply"] = record(client, reply_id, follow=False)
            except NotFound:
                found["reply_error"] = f"the reply execution {reply_id} was not found"
    return found


# -- text ----------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> list[str]:
    """Rows under a header, columns padded to their widest cell (the last is not padded)."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    lines = []
    for row in [list(header), *cells]:
        padded = [c.ljust(w) for c, w in zip(row[:-1], widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return lines


def _block(items: Sequence[tuple[str, Any]], indent: str = "  ") -> list[str]:
    if not items:
        return [f"{indent}-"]
    width = max(len(k) for k, _ in items)
    return [f"{indent}{k.ljust(width)}  {_cell(v)}" for k, v in items]


def record_lines(found: dict[str, Any], names: Names, indent: str = "") -> list[str]:
    """`record(...)` as text: envelope, body, every field of the execution, outcome, reply."""
    exe: dict[str, Any] = found["execution"]
    payload = exe.get("payload") if isinstance(exe.get("payload"), dict) else {}
    meta: dict[str, Any] | None = found["envelope"]
    kind = "foreign" if meta is None else str(meta.get("kind") or "message")
    sender = meta.get("sender") if meta else None
    lines = [
        f"{kind} {meta.get('id') if meta else '(no cuemsg envelope)'}: "
        f"from {names.long_label(sender if isinstance(sender, str) else None)} "
        f"to {names.long_label(exe.get('cue_id'))}, {exe.get('status')}"
    ]
    lines.append("envelope")
    items: list[tuple[str, Any]] = [
        (k, names.long_label(v) if k == "sender" else v) for k, v in (meta or {}).items()
    ]
    items += [
        (k, names.long_label(v) if k == "reply_cue_id" else v)
        for k, v in outside_fields(payload).items()
    ]
    lines += _block(items)
    lines.append("body")
    body = json.dumps(found["body"], ensure_ascii=False, indent=2).splitlines()
    lines += [f"  {line}" for line in body]
    lines.append("execution")
    lines += _block(
        [
            (k, names.long_label(v) if k == "cue_id" else v)
            for k, v in exe.items()
            if k not in ("payload", "outcome")
        ]
    )
    lines.append("outcome")
    outcome = exe.get("outcome")
    lines += _block(list(outcome.items()) if isinstance(outcome, dict) else [])
    if found.get("reply") is not None:
        lines.append("")
        lines.append(f"reply: execution {found['reply_execution_id']}, named by the outcome")
        lines += record_lines(found["reply"], names, "  ")
    elif found.get("reply_error"):
        lines.append(f"reply: {found['reply_error']}")
    return [f"{indent}{line}" if line else line for line in lines]


def dead_letter_lines(row: dict[str, Any]) -> list[str]:
    """One dead letter as text: who, where, how many claims, then its whole error."""
    sender = row["sender_name"] or row["sender"] or "-"
    return [
        f"{row['execution_id']}  {row['kind']} {row['message_id'] or '-'} "
        f"to {row['mailbox'] or row['cue_id']} from {sender}, "
        f"{row['attempts']} attempt(s), {row['created_at'] or '-'}",
        f"  error: {one_line(row['summary'])}",
    ]
