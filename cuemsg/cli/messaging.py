"""`cuemsg send`, `cuemsg request` and `cuemsg reply`: messages out."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from cuemsg.cli._body import read_body
from cuemsg.cli._connect import DEFAULT_SENDER, make_client, positive
from cuemsg.cli._output import EXIT_CODES, emit

BODY_HELP = (
    "the body, as JSON, strictly (an object, a number, a quoted string...); "
    "'-' reads it from stdin; with --text, the text as it is"
)
TEXT_HELP = "send BODY as a plain string, not JSON"


def _send(args: argparse.Namespace) -> int:
    from cuemsg._inspect import find_mailbox
    from cuemsg.mailbox.sync import Mailbox

    body = read_body(args.body, as_text=args.text)
    with make_client(args) as client:
        cue = find_mailbox(client, args.to)
        with Mailbox.open(client, args.sender) as mb:
            sent = mb.send(cue.id, body, task=args.task, thread=args.thread, ttl=args.ttl)
            data = {
                "id": sent.id,
                "execution_id": sent.execution_id,
                "to": cue.id,
                "to_name": cue.name,
                "from": mb.address,
                "from_name": mb.name,
                "scheduled_for": sent.scheduled_for,
            }
    emit(
        args,
        data,
        [
            f"sent to {cue.name} ({cue.id}) from {args.sender}",
            f"message    {sent.id}",
            f"execution  {sent.execution_id}",
        ],
    )
    return 0


def _request(args: argparse.Namespace) -> int:
    from cuemsg._inspect import find_mailbox
    from cuemsg.mailbox.sync import Mailbox

    body = read_body(args.body, as_text=args.text)
    with make_client(args) as client:
        cue = find_mailbox(client, args.to)
        # A short long-poll: closing waits for the reply stream's current poll to end.
        with Mailbox.open(client, args.sender, poll_wait=1.0) as mb:
            started = time.monotonic()
            reply = mb.request(cue.id, body, timeout=args.timeout)
            elapsed = time.monotonic() - started
            data = {"reply": reply, "to": cue.id, "from": mb.address, "seconds": elapsed}
    emit(args, data, json.dumps(reply, ensure_ascii=False, indent=2, default=str))
    return 0


def _reply(args: argparse.Namespace) -> int:
    from cuemsg.envelope import ErrorBody
    from cuemsg.mailbox.answer import reply_to_execution

    if args.error is not None:  # BODY is the error's message, as text
        message = read_body(args.body, as_text=True)
        error = ErrorBody(type=args.error, message=message)
        body: Any = None
    else:
        error, body = None, read_body(args.body, as_text=args.text)
    with make_client(args) as client:
        done = reply_to_execution(client, args.execution_id, body, error=error)
    emit(
        args,
        {
            "execution_id": done.execution_id,
            "reply_id": done.reply_id,
            "reply_execution_id": done.reply_execution_id,
            "to": done.reply_cue_id,
            "correlation_id": done.correlation_id,
        },
        [
            f"replied to {done.execution_id} (sent to {done.reply_cue_id})",
            f"reply      {done.reply_id}",
            f"execution  {done.reply_execution_id}",
        ],
    )
    return 0


def add_commands(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """`send`, `request` and `reply`."""
    to_help = "recipient: a mailbox name, or its address (cue id, cue_...)"
    from_help = f"the mailbox to send from, created if needed (default {DEFAULT_SENDER!r})"

    send = sub.add_parser(
        "send",
        parents=common,
        help="send one message to a mailbox",
        description="Send one message; prints its message id and execution id.",
        epilog=EXIT_CODES,
    )
    send.add_argument("to", metavar="TO", help=to_help)
    send.add_argument("body", metavar="BODY", help=BODY_HELP)
    send.add_argument("--text", action="store_true", help=TEXT_HELP)
    send.add_argument(
        "--from", dest="sender", metavar="NAME", default=DEFAULT_SENDER, help=from_help
    )
    send.add_argument("--task", help="routing task (default: the recipient's own)")
    send.add_argument("--thread", help="conversation id, carried over by replies")
    send.add_argument(
        "--ttl", type=positive(float), help="seconds after which receivers skip the message"
    )
    send.set_defaults(func=_send)

    request = sub.add_parser(
        "request",
        parents=common,
        help="send a request and print its reply",
        description=(
            "Send a request and wait for the reply of a mailbox that serves it (`listen "
            "--exec`, `cuemsg reply`, or a program's Mailbox.serve); prints the reply body "
            "as JSON. The reply comes back to the --from mailbox, on a reply stream of "
            "this command alone."
        ),
        epilog=EXIT_CODES,
    )
    request.add_argument("to", metavar="TO", help=to_help)
    request.add_argument("body", metavar="BODY", help=BODY_HELP)
    request.add_argument("--text", action="store_true", help=TEXT_HELP)
    request.add_argument(
        "--from", dest="sender", metavar="NAME", default=DEFAULT_SENDER, help=from_help
    )
    request.add_argument(
        "--timeout", type=positive(float), default=30.0, help="seconds to wait (default 30)"
    )
    request.set_defaults(func=_request)

    reply = sub.add_parser(
        "reply",
        parents=common,
        help="answer a request that `listen` printed",
        description=(
            "Answer the request held by EXECUTION_ID (as `cuemsg listen` prints it): the "
            "reply goes to its requester, then the request's outcome is recorded."
        ),
        epilog=EXIT_CODES,
    )
    reply.add_argument("execution_id", metavar="EXECUTION_ID")
    reply.add_argument("body", metavar="BODY", help=BODY_HELP)
    reply.add_argument("--text", action="store_true", help=TEXT_HELP)
    reply.add_argument(
        "--error",
        metavar="TYPE",
        help="answer with an error instead: the requester raises RemoteError(TYPE, BODY), "
        "BODY being the message, as text",
    )
    reply.set_defaults(func=_reply)
