"""`cuemsg mailbox delete`: the mailbox itself (its cue)."""

from __future__ import annotations

import argparse
from typing import Any

from cuemsg.cli._connect import make_client
from cuemsg.cli._output import EXIT_CODES, emit


def _delete(args: argparse.Namespace) -> int:
    from cuemsg.mailbox.sync import Mailbox

    with make_client(args) as client:
        found = Mailbox.lookup(client, args.name)  # never creates: a typo is an error
        with Mailbox.open(client, found.name) as mb:
            rejected = mb.delete(force=args.force)
    text = [f"deleted mailbox {found.name} ({found.address})"]
    if rejected:
        text.append(f"{rejected} waiting message(s) rejected: the mailbox was deleted")
    emit(
        args,
        {"deleted": found.name, "address": found.address, "rejected": rejected},
        text,
    )
    return 0


def add_commands(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """`mailbox delete`."""
    mailbox = sub.add_parser(
        "mailbox",
        help="manage a mailbox itself (delete it)",
        description="The mailbox itself: its cue in CueAPI.",
        epilog=EXIT_CODES,
    )
    what = mailbox.add_subparsers(dest="what", metavar="ACTION", required=True)
    delete = what.add_parser(
        "delete",
        parents=common,
        help="delete a mailbox (refused while messages wait in it)",
        description=(
            "Delete the mailbox NAME (its cue). Refused while messages wait in it (sent, "
            "not yet claimed), saying how many; with --force they are rejected first "
            "(dead letters; a waiting requester is told no reply will come), then it is "
            "deleted. Its execution history stays."
        ),
        epilog=EXIT_CODES,
    )
    delete.add_argument("name", metavar="NAME", help="mailbox name or address")
    delete.add_argument("--force", action="store_true", help="delete it even with messages waiting")
    delete.set_defaults(func=_delete)
