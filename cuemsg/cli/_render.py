"""`cuemsg inspect` on a terminal: tables and a message's timeline drawn with
`rich`. Used only when stdout is a terminal and `--json` is not given; piped
output keeps the plain text of `cuemsg._inspect`.

States read as words first and colour second (`success` in green, `failed` in
red, ...), so nothing depends on colour alone.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console, Group
from rich.json import JSON
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from cuemsg._inspect import SUMMARY_WIDTH, one_line

STATE_STYLES = {
    "pending": "cyan",
    "retry_ready": "cyan",
    "delivering": "blue",
    "success": "green",
    "failed": "bold red",
    "missed": "magenta",
}


def render(data: Any, console: Console | None = None) -> bool:
    """Print what an `inspect` command found, if it is one of its shapes; False if not."""
    console = console or Console(highlight=False)
    if not isinstance(data, dict):
        return False
    if "mailboxes" in data:
        console.print(_mailboxes(data["mailboxes"]))
    elif "messages" in data and "mailbox" in data:
        console.print(_messages(data["mailbox"], data["messages"]))
    elif "dead_letters" in data:
        console.print(_dead_letters(data["dead_letters"]))
    elif "execution" in data and "envelope" in data:
        console.print(_record(data))
    else:
        return False
    return True


def state(status: str | None) -> Text:
    return Text(status or "-", style=STATE_STYLES.get(status or "", ""))


def _table(title: str, *columns: str) -> Table:
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, expand=False)
    for column in columns:
        table.add_column(column, overflow="fold")
    return table


def _mailboxes(rows: list[dict[str, Any]]) -> Table:
    from cuemsg.cli.inspect import MAILBOXES_LEGEND

    table = _table(f"{len(rows)} mailbox(es)", "NAME", "ADDRESS", "TASK", "WAITING", "FIRED")
    table.caption = "\n".join(MAILBOXES_LEGEND)
    table.caption_justify = "left"
    for r in rows:
        table.add_row(
            str(r["name"]),
            str(r["address"]),
            str(r["task"]),
            str(r.get("waiting", "-")),
            str(r["fired_count"]),
        )
    return table


def _messages(mailbox: dict[str, Any], rows: list[dict[str, Any]]) -> Table:
    table = _table(
        f"mailbox {mailbox['name']} ({mailbox['address']}): {len(rows)} message(s), newest first",
        "EXECUTION",
        "KIND",
        "SENDER",
        "THREAD",
        "STATUS",
        "ATTEMPTS",
        "OUTCOME",
    )
    for r in rows:
        table.add_row(
            str(r["execution_id"]),
            str(r["kind"]),
            str(r["sender_name"] or r["sender"] or "-"),
            str(r["thread"] or "-"),
            state(r["status"]),
            str(r["attempts"]),
            one_line(str(r["summary"]), SUMMARY_WIDTH),
        )
    return table


def _dead_letters(rows: list[dict[str, Any]]) -> Table:
    table = _table(
        f"{len(rows)} dead letter(s), newest first",
        "EXECUTION",
        "MAILBOX",
        "KIND",
        "SENDER",
        "ATTEMPTS",
        "ERROR",
    )
    for r in rows:
        table.add_row(
            str(r["execution_id"]),
            str(r["mailbox"] or r["cue_id"]),
            str(r["kind"]),
            str(r["sender_name"] or r["sender"] or "-"),
            str(r["attempts"]),
            Text(one_line(str(r["summary"])), style="red"),
        )
    return table


def timeline(execution: dict[str, Any]) -> list[tuple[str, str, Text]]:
    """A message's history from its record, oldest first: (when, what, details)."""
    steps: list[tuple[str, str, Text]] = []
    if execution.get("redrive_of"):
        steps.append(("", "redrive", Text(f"sends dead letter {execution['redrive_of']} again")))
    steps.append((str(execution.get("created_at") or ""), "sent", Text("fired, pending")))
    attempts = int(execution.get("attempts") or 0)
    if attempts:
        worker = execution.get("claimed_by_worker") or "-"
        lost = f", {attempts - 1} lease(s) ran out before" if attempts > 1 else ""
        when = str(execution.get("claimed_at") or "")
        steps.append((when, "claimed", Text(f"by {worker}, attempt {attempts}{lost}")))
    outcome = execution.get("outcome")
    status = execution.get("status")
    if isinstance(outcome, dict):
        said = outcome.get("result") if outcome.get("success") else outcome.get("error")
        detail = state("success" if outcome.get("success") else "failed")
        if said:
            detail.append(f": {one_line(str(said))}")
        steps.append((str(outcome.get("recorded_at") or ""), "outcome", detail))
    elif status == "missed":
        steps.append((str(execution.get("updated_at") or ""), "expired", state("missed")))
    if execution.get("redriven_to"):
        text = Text(f"sent again as {execution['redriven_to']}")
        steps.append((str(execution.get("updated_at") or ""), "redriven", text))
    return steps


def _record(found: dict[str, Any]) -> Group:
    exe: dict[str, Any] = found["execution"]
    meta = found.get("envelope") or {}
    kind = meta.get("kind") or ("message" if meta else "foreign")
    head = Text(f"{kind} {meta.get('id') or '(no cuemsg envelope)'}  ", style="bold")
    head.append_text(state(exe.get("status")))
    head.append(f"  execution {exe.get('id')} on {exe.get('cue_id')}")
    steps = Table(box=box.SIMPLE, show_header=True, title="timeline", title_justify="left")
    steps.add_column("WHEN")
    steps.add_column("WHAT")
    steps.add_column("DETAILS", overflow="fold")
    for when, what, details in timeline(exe):
        steps.add_row(when, what, details)
    parts: list[Any] = [head, steps]
    if meta:
        parts.append(Panel(JSON.from_data(meta), title="envelope", title_align="left"))
    parts.append(Panel(JSON.from_data(found.get("body")), title="body", title_align="left"))
    if found.get("reply") is not None:
        reply = _record(found["reply"])
        parts.append(Panel(reply, title=f"reply {found['reply_execution_id']}", title_align="left"))
    elif found.get("reply_error"):
        parts.append(Text(f"reply: {found['reply_error']}", style="yellow"))
    return Group(*parts)
