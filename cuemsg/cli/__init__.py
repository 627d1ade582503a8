"""The `cuemsg` command line (also `python -m cuemsg`). The only place logging is set up.

`serve` and `demo` need nothing; `send`, `request`, `reply`, `listen`,
`inspect`, `mailbox`, `tail` and `redrive` talk to CueAPI with the key in
`CUEAPI_API_KEY` (or `--api-key`) at `CUEAPI_BASE_URL` (or `--base-url`),
and print text, or JSON with `--json`. Expected failures print one line,
`cuemsg: ...`, on stderr (one JSON object with `--json`) and exit non-zero
(see `_output.EXIT_CODES`); only a bug prints a traceback.

Modules: `serve.py` (serve, demo), `messaging.py` (send, request, reply),
`listen.py` (listen, and `_exec.py` for --exec), `inspect.py` (and
`_render.py`: its tables and timelines on a terminal), `mailbox.py` (mailbox
delete), `tail.py` (tail, redrive), `cuemsg.mcp.cli` (mcp), and `_output.py`
(printing, errors, exit codes).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from cuemsg import __version__
from cuemsg.cli import inspect, listen, mailbox, messaging, serve, tail, webhook
from cuemsg.cli._connect import client_options, connection_options
from cuemsg.cli._output import (
    EXIT_CODES,
    USAGE,
    Parser,
    UsageError,
    interrupted,
    report_error,
    run_command,
)
from cuemsg.mcp.cli import add_parser as add_mcp_command

__all__ = ["EXIT_CODES", "build_parser", "main"]


def build_parser() -> Parser:
    """The parser of every command (its errors raise `UsageError`)."""
    parser = Parser(
        prog="cuemsg",
        description="Accountable messaging between AI agents on CueAPI.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"cuemsg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    connection_options(
        parser.add_argument_group("connection (send, request, reply, listen, inspect, mailbox)"),
        default=None,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    common = [client_options()]
    serve.add_commands(sub)
    messaging.add_commands(sub, common)
    listen.add_commands(sub, common)
    inspect.add_commands(sub, common)
    mailbox.add_commands(sub, common)
    tail.add_commands(sub, common)
    add_mcp_command(sub)
    webhook.add_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; answer its exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in argv
    try:
        args = build_parser().parse_args(argv)
    except UsageError as exc:
        if not as_json:
            print(exc.usage, end="", file=sys.stderr)
        return report_error(str(exc), USAGE, as_json=as_json, type="UsageError")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return run_command(args, args.func)
    except KeyboardInterrupt:
        return interrupted(f"cuemsg {args.command} stopped", as_json=as_json)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
