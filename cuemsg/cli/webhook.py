"""`cuemsg webhook verify`: check a webhook signature (for people writing
receivers), and the webhook options of `cuemsg serve` (`--webhook-allow`,
`--webhook-backoff-scale`)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from cuemsg._inspect import CommandError
from cuemsg.cli._output import ERROR, EXIT_CODES, UsageError
from cuemsg.webhook import DEFAULT_TOLERANCE, verify


def add_webhook_options(serve: argparse.ArgumentParser) -> None:
    serve.add_argument(
        "--webhook-allow",
        metavar="CIDR",
        action="append",
        default=[],
        help="let webhooks reach this private range (repeatable; e.g. 10.0.0.0/8)",
    )
    serve.add_argument(
        "--webhook-backoff-scale",
        type=float,
        default=None,
        help="multiply webhook retry backoffs (1; tests use e.g. 0.001)",
    )


def _verify(args: argparse.Namespace) -> int:
    secret = args.secret or os.environ.get("CUEAPI_WEBHOOK_SECRET")
    if not secret:
        raise UsageError("webhook verify: no secret: pass --secret or set CUEAPI_WEBHOOK_SECRET")
    if args.body == "-":
        body = sys.stdin.buffer.read()
    else:
        try:
            with open(args.body, "rb") as f:
                body = f.read()
        except OSError as exc:
            raise UsageError(f"webhook verify: cannot read {args.body!r}: {exc.strerror}") from None
    if verify(
        body,
        signature=args.signature,
        timestamp=args.timestamp,
        secret=secret,
        tolerance=args.tolerance,
    ):
        print("signature valid")
        return 0
    raise CommandError(
        "webhook verify: signature invalid (wrong secret, altered body, or a timestamp "
        f"more than {args.tolerance:g} s away; --tolerance 0 ignores its age)",
        ERROR,
    )


def add_commands(sub: Any) -> None:
    """`webhook verify`."""
    webhook = sub.add_parser("webhook", help="webhook helpers")
    actions = webhook.add_subparsers(dest="action", required=True)
    check = actions.add_parser(
        "verify",
        help="check a webhook signature",
        description=(
            "Check the X-CueAPI-Signature of a webhook body: exit 0 when it is valid, "
            "1 when it is not."
        ),
        epilog=EXIT_CODES,
    )
    check.add_argument("--secret", help="the webhook secret (env CUEAPI_WEBHOOK_SECRET)")
    check.add_argument("--signature", required=True, help="the X-CueAPI-Signature header")
    check.add_argument("--timestamp", required=True, help="the X-CueAPI-Timestamp header")
    check.add_argument("--body", default="-", help="file holding the body (default - : stdin)")
    check.add_argument(
        "--tolerance",
        type=float,
        default=DEFAULT_TOLERANCE,
        help=f"seconds the timestamp may be off ({DEFAULT_TOLERANCE}; 0 = any)",
    )
    check.set_defaults(func=_verify)
