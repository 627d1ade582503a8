"""`cuemsg tail` and `cuemsg redrive`.

`tail` prints the event feed (`GET /v1/events`) as it happens, one line an
event: coloured with `rich` on a terminal, plain when piped, one JSON object
a line with `--json`; it reconnects by itself and resumes where it stopped.
`redrive` sends dead letters again, by execution id or every one of a
mailbox's (`--since`, `--dry-run`), through the server's `executions.redrive`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from cuemsg._exceptions import Conflict, CueAPIError, TransportError
from cuemsg._inspect import CommandError, Names, executions, find_mailbox
from cuemsg.cli._connect import make_client
from cuemsg.cli._output import UsageError

if TYPE_CHECKING:
    from cuemsg._events import FeedEvent
    from cuemsg.cueapi import CueClient

#: Dead letters a `redrive --mailbox` looks at, newest first.
REDRIVE_SCAN = 10_000

# How each event type reads on a terminal: a word and a colour (never colour alone).
_STYLES = {
    "fired": "cyan",
    "claimed": "blue",
    "heartbeat_lost": "yellow",
    "outcome": "green",
    "expired": "magenta",
    "redriven": "bold cyan",
}


# -- tail --------------------------------------------------------------------------------------


def event_line(data: dict[str, Any], names: Names | None = None) -> str:
    """One event as a line of text: time, type, mailbox, message, then what happened."""
    at = str(data.get("at") or "")
    clock = at[11:23] if len(at) >= 23 else at
    mailbox = data.get("cue_name") or data.get("cue_id") or "-"
    parts = [clock, f"{data['type']:<14}", str(mailbox)]
    message = data.get("message_id")
    parts.append(f"{data.get('kind') or 'foreign'} {message or data['execution_id']}")
    sender = data.get("sender")
    if sender:
        parts.append(f"from {names.label(sender) if names else sender}")
    if data.get("thread"):
        parts.append(f"thread {data['thread']}")
    if data.get("worker_id"):
        parts.append(f"by {data['worker_id']} (attempt {data.get('attempt')})")
    if data["type"] in ("outcome", "expired"):
        said = data.get("result") if data.get("success") else data.get("error")
        verdict = "success" if data.get("success") else "failed"
        parts.append(f"{verdict}: {said}" if said else verdict)
    if data.get("redriven_to"):
        parts.append(f"sent again as {data['redriven_to']}")
    if data.get("redrive_of"):
        parts.append(f"redrive of {data['redrive_of']}")
    return "  ".join(parts)


def tail(args: argparse.Namespace) -> int:
    from cuemsg._events import follow_batches

    with make_client(args) as client:
        cue_id = find_mailbox(client, args.mailbox).id if args.mailbox else None
        names = Names(client)
        show = _printer(args, names)
        shown = 0
        announced = False

        def dropped(exc: BaseException) -> None:
            print(f"cuemsg tail: connection lost ({exc}); reconnecting", file=sys.stderr)

        for batch in follow_batches(
            client.base_url,
            client.api_key or "",
            cue_id=cue_id,
            thread=args.thread,
            last_event_id=args.from_id,
            on_reconnect=dropped,
        ):
            events = []
            for event in batch:
                if event.type != "ready":
                    events.append(event)
                elif not announced:  # on stderr: stdout stays the events only
                    where = args.mailbox or "every mailbox"
                    print(f"cuemsg tail: {where}, after event {event.id}", file=sys.stderr)
                    sys.stderr.flush()
                    announced = True
            if args.limit is not None:
                events = events[: args.limit - shown]
            if events:
                show(events)
                shown += len(events)
            if args.limit is not None and shown >= args.limit:
                break
    return 0


def _printer(args: argparse.Namespace, names: Names) -> Callable[[list[FeedEvent]], None]:
    """What prints a batch of events (what one read from the server completed).

    Piped or `--json`, a batch is one write and one flush: a busy feed costs a
    write per batch (a few a second), not per event, and a reader at the other
    end sees each event as soon as it came.
    """
    if args.json:

        def as_json(events: list[FeedEvent]) -> None:
            # The server's JSON as it came: one line an event.
            sys.stdout.write("".join([event.raw + "\n" for event in events]))
            sys.stdout.flush()

        return as_json
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.text import Text

        console = Console(highlight=False)

        def coloured(events: list[FeedEvent]) -> None:
            for event in events:
                line = Text(event_line(event.data, names))
                start = line.plain.find(event.type)
                line.stylize(_STYLES.get(event.type, ""), start, start + len(event.type))
                if event.type == "outcome" and not event.data.get("success"):
                    line.stylize("red", start, start + len(event.type))
                console.print(line)

        return coloured

    def plain(events: list[FeedEvent]) -> None:
        sys.stdout.write("".join([event_line(event.data, names) + "\n" for event in events]))
        sys.stdout.flush()

    return plain


# -- redrive -----------------------------------------------------------------------------------


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """`--since`: an ISO 8601 time (UTC when it has no offset) or an age (`30m`, `2h`, `1d`).

    Raises:
        UsageError: neither.
    """
    now = now or datetime.now(timezone.utc)
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", text)
    if match:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
        return now - timedelta(seconds=float(match.group(1)) * unit)
    try:
        when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r}: give an ISO 8601 time (2026-12-01T03:00:00Z) or an age "
            "(30m, 2h, 1d)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def redrive(args: argparse.Namespace) -> int:
    if bool(args.execution_ids) == bool(args.mailbox):
        raise UsageError("redrive: give EXECUTION_ID... or --mailbox NAME (one of the two)")
    if args.since and not args.mailbox:
        raise UsageError("redrive: --since goes with --mailbox")
    since = parse_since(args.since) if args.since else None
    with make_client(args) as client:
        if not client.extensions or "executions.redrive" not in client.extensions:
            raise CommandError(
                "this server cannot redrive (no executions.redrive extension): "
                "it needs `cuemsg serve`; the hosted CueAPI has no redrive"
            )
        ids = list(args.execution_ids) or _dead_letters(client, args.mailbox, since)
        results = [_redrive_one(client, eid, args.dry_run) for eid in ids]
    failed = [r for r in results if r["result"] == "error"]
    if args.json:
        print(json.dumps({"redrives": results, "dry_run": args.dry_run}, ensure_ascii=False))
    else:
        if not results:
            print("no dead letters to redrive")
        for r in results:
            print(_redrive_text(r), file=sys.stderr if r["result"] == "error" else sys.stdout)
    return 1 if failed else 0


def _dead_letters(client: CueClient, mailbox: str, since: datetime | None) -> list[str]:
    cue = find_mailbox(client, mailbox)
    found = executions(client, cue_id=cue.id, status="failed", limit=REDRIVE_SCAN)
    ids = []
    for exe in found:
        if exe.redriven_to:
            continue  # already sent again
        created = _when(exe.created_at)
        if since is not None and (created is None or created < since):
            continue
        ids.append(exe.id)
    ids.reverse()  # oldest first: sent again in the order they first came
    return ids


def _when(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


def _redrive_one(client: CueClient, execution_id: str, dry_run: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"execution_id": execution_id, "redriven_to": None}
    try:
        if dry_run:
            exe = client.executions.get(execution_id)
            if exe.redriven_to:
                row.update(result="already", redriven_to=exe.redriven_to)
            elif exe.status != "failed":
                row.update(result="error", error=_not_dead(execution_id, exe.status))
            else:
                row.update(result="would_redrive")
            return row
        done = client.executions.redrive(execution_id)
    except Conflict as exc:
        row.update(result="error", error=exc.message)
        return row
    except CueAPIError as exc:
        row.update(result="error", error=f"{exc.status} {exc.code}: {exc.message}")
        return row
    except TransportError:
        raise
    row.update(result="redriven" if done.redriven else "already", redriven_to=done.redriven_to)
    return row


def _not_dead(execution_id: str, status: str) -> str:
    return f"execution {execution_id!r} is {status}, not a dead letter (failed): nothing to redrive"


def _redrive_text(row: dict[str, Any]) -> str:
    eid = row["execution_id"]
    if row["result"] == "redriven":
        return f"redriven {eid} -> {row['redriven_to']}"
    if row["result"] == "already":
        return f"already redriven {eid} -> {row['redriven_to']} (nothing done)"
    if row["result"] == "would_redrive":
        return f"would redrive {eid} (dry run)"
    return f"cuemsg: {row['error']}"


# -- the parsers -------------------------------------------------------------------------------


def add_commands(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """Add `tail` and `redrive` to the `cuemsg` subcommands."""
    t = sub.add_parser(
        "tail",
        parents=common,
        help="watch hand-offs as they happen (the server's event feed)",
        description="Print each hand-off as it happens: fired, claimed, heartbeat_lost, "
        "outcome, expired, redriven. Reconnects by itself and resumes where it stopped. "
        "Needs `cuemsg serve` (extension events.stream).",
    )
    t.add_argument("mailbox", metavar="MAILBOX", nargs="?", help="only this mailbox's messages")
    t.add_argument("--thread", help="only messages of this thread")
    t.add_argument(
        "--from",
        dest="from_id",
        type=_event_id,
        default=None,
        metavar="ID",
        help="start after this event id (0: everything on record); default: from now",
    )
    t.add_argument("--limit", type=_positive_int, help="stop after this many events")
    t.set_defaults(func=tail)

    r = sub.add_parser(
        "redrive",
        parents=common,
        help="send dead letters again",
        description="Send dead letters (failed executions) again: a new execution with the "
        "same message, whose envelope names the dead one, and the dead one's record names the "
        "new one. A dead letter is sent again once: redriving it twice does nothing the second "
        "time. Needs `cuemsg serve` (extension executions.redrive).",
    )
    r.add_argument("execution_ids", metavar="EXECUTION_ID", nargs="*", help="dead letters")
    r.add_argument("--mailbox", metavar="NAME", help="every dead letter of this mailbox")
    r.add_argument("--since", help="with --mailbox: only those sent since (ISO time, or 30m, 2h)")
    r.add_argument("--dry-run", action="store_true", help="say what would be sent, send nothing")
    r.set_defaults(func=redrive)


def _event_id(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"an event id is a non-negative integer, not {text!r}")
    return int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, not {text!r}")
    return value
