"""`cuemsg inspect`: what CueAPI recorded (mailboxes, messages, dead letters, one message)."""

from __future__ import annotations

import argparse
from typing import Any

from cuemsg.cli._connect import make_client, positive
from cuemsg.cli._output import EXIT_CODES, emit

#: Printed under `inspect mailboxes`: what its counts mean, and why every mailbox is paused.
MAILBOXES_LEGEND = [
    "WAITING: messages sent and not yet claimed. FIRED: every message it was ever sent "
    "(replies to its requests included).",
    'Status: every mailbox is "paused" on purpose: its cue never fires on a schedule of '
    "its own; messages (manual fires) arrive all the same.",
]


def _mailboxes(args: argparse.Namespace) -> int:
    from cuemsg._inspect import all_cues, is_mailbox, mailbox_row, table
    from cuemsg.mailbox.names import count_waiting
    from cuemsg.mailbox.sync import _run as run_flow  # runs a flow that only calls the client

    with make_client(args) as client:
        rows = []
        for cue in all_cues(client):
            if is_mailbox(cue):
                row = mailbox_row(cue)
                row["waiting"] = run_flow(client, count_waiting(cue.id, str(row["task"])))
                rows.append(row)
    rows.sort(key=lambda r: str(r["name"]))
    text = (
        [
            *table(
                [
                    [r["name"], r["address"], r["task"], r["waiting"], r["fired_count"]]
                    for r in rows
                ],
                ["NAME", "ADDRESS", "TASK", "WAITING", "FIRED"],
            ),
            "",
            *MAILBOXES_LEGEND,
        ]
        if rows
        else ["no mailboxes"]
    )
    emit(args, {"mailboxes": rows}, text)
    return 0


def _messages(args: argparse.Namespace) -> int:
    from cuemsg._inspect import (
        SUMMARY_WIDTH,
        Names,
        executions,
        find_mailbox,
        mailbox_row,
        message_row,
        one_line,
        table,
    )

    with make_client(args) as client:
        names = Names(client)
        cue = find_mailbox(client, args.name, names)
        found = executions(client, cue_id=cue.id, status=args.status, limit=args.limit)
        rows = [message_row(e, names) for e in found]
    which = f"{args.status} " if args.status else ""
    text = [f"mailbox {cue.name} ({cue.id}): {len(rows)} {which}message(s), newest first"]
    if rows:
        text += table(
            [
                [
                    r["execution_id"],
                    r["kind"],
                    r["sender_name"] or r["sender"],
                    r["status"],
                    r["attempts"],
                    r["claimed_by"],
                    one_line(r["summary"], SUMMARY_WIDTH),
                ]
                for r in rows
            ],
            ["EXECUTION", "KIND", "SENDER", "STATUS", "ATTEMPTS", "CLAIMED BY", "OUTCOME"],
        )
    emit(args, {"mailbox": mailbox_row(cue), "messages": rows}, text)
    return 0


def _dead_letters(args: argparse.Namespace) -> int:
    from cuemsg._inspect import Names, dead_letter_lines, executions, find_mailbox, message_row

    with make_client(args) as client:
        names = Names(client)
        cue = find_mailbox(client, args.name, names) if args.name else None
        found = executions(
            client, cue_id=cue.id if cue else None, status="failed", limit=args.limit
        )
        rows = [message_row(e, names) for e in found]
    where = f" in {cue.name} ({cue.id})" if cue else ""
    text = [f"{len(rows)} dead letter(s){where}, newest first"]
    for row in rows:
        text += dead_letter_lines(row)
    emit(args, {"dead_letters": rows}, text)
    return 0


def _message(args: argparse.Namespace) -> int:
    from cuemsg._inspect import Names, record, record_lines

    with make_client(args) as client:
        found = record(client, args.execution_id)
        text = [] if args.json else record_lines(found, Names(client))
    emit(args, found, text)
    return 0


def add_commands(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """`inspect mailboxes|messages|dead-letters|message`."""
    inspect = sub.add_parser(
        "inspect",
        help="read mailboxes, messages and dead letters from CueAPI",
        description="What CueAPI recorded: mailboxes, their messages, dead letters, one message.",
        epilog=EXIT_CODES,
    )
    what = inspect.add_subparsers(dest="what", metavar="WHAT", required=True)
    mailboxes = what.add_parser(
        "mailboxes",
        parents=common,
        help="the mailboxes: name, address, task, messages waiting, fired count",
        description=(
            "Every mailbox: name, address, task, messages waiting (sent, not yet claimed) "
            "and fired (ever sent). Every mailbox's status is paused on purpose: it never "
            "fires on its own; messages arrive all the same."
        ),
    )
    mailboxes.set_defaults(func=_mailboxes)

    messages = what.add_parser(
        "messages",
        parents=common,
        help="a mailbox's messages (executions), newest first",
        description=(
            "A mailbox's executions, newest first: id, kind, sender, status, attempts, "
            "claimed by, outcome. Replies to the mailbox's requests are among them."
        ),
    )
    messages.add_argument("name", metavar="NAME", help="mailbox name or address")
    messages.add_argument(
        "--status",
        choices=["pending", "retry_ready", "delivering", "success", "failed", "missed"],
        help="only executions in this state",
    )
    messages.add_argument(
        "--limit", type=positive(int), default=20, help="at most this many (default 20)"
    )
    messages.set_defaults(func=_messages)

    dead = what.add_parser(
        "dead-letters",
        parents=common,
        help="failed executions with their error",
        description="Failed executions (rejected, expired, or out of claims), with their error.",
    )
    dead.add_argument("name", metavar="NAME", nargs="?", help="only this mailbox's")
    dead.add_argument(
        "--limit", type=positive(int), default=50, help="at most this many (default 50)"
    )
    dead.set_defaults(func=_dead_letters)

    message = what.add_parser(
        "message",
        parents=common,
        help="one message's full record (and its reply's)",
        description=(
            "One execution's full record: envelope, body, every field of the execution, "
            "its outcome; for a request, the reply execution its outcome names, read too."
        ),
    )
    message.add_argument("execution_id", metavar="EXECUTION_ID")
    message.set_defaults(func=_message)
