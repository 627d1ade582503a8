"""What the CLI prints: results (text or `--json`), errors, and the exit codes.

Expected failures become one line on stderr, `cuemsg: ...` (with `--json`,
one JSON object on stdout: `{"error", "type", "exit_code"}`); only a bug
prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from cuemsg._exceptions import (
    CueAPIError,
    CuemsgError,
    MissingAPIKey,
    RemoteError,
    RequestTimeout,
    TransportError,
)
from cuemsg._inspect import CommandError

OK = 0
#: CueAPI said no, the server cannot be reached, the responder's handler raised, ...
ERROR = 1
#: Bad usage: a wrong option, an invalid JSON body, no API key.
USAGE = 2
#: A request got no reply in time.
TIMEOUT = 3
#: `serve` could not listen: the address is in use (or not ours to bind).
CANNOT_LISTEN = 4
#: Ctrl-C (SIGINT), or SIGTERM for `listen`.
INTERRUPTED = 130

#: What the exit status means (shown by --help and in the README).
EXIT_CODES = f"""exit status: {OK} done; {ERROR} an error (CueAPI said no, the server cannot be
reached, the responder's handler raised, no such mailbox); {USAGE} bad usage (a wrong
option, a body that is not JSON, no API key); {TIMEOUT} a request got no reply in time;
{CANNOT_LISTEN} serve could not listen (address in use, or --host not this machine's);
{INTERRUPTED} interrupted (Ctrl-C)."""

NO_KEY = "no CueAPI key: set CUEAPI_API_KEY or pass --api-key"


class UsageError(CommandError):
    """Bad usage found by the parser (or by a command reading its arguments)."""

    def __init__(self, message: str, usage: str = "") -> None:
        super().__init__(message, USAGE)
        self.usage = usage


class Parser(argparse.ArgumentParser):
    """argparse that raises `UsageError` instead of printing, so `--json` can report it."""

    def error(self, message: str) -> NoReturn:
        # report_error() prefixes "cuemsg: "; name the subcommand after it, not "cuemsg" twice.
        command = self.prog.partition(" ")[2]
        raise UsageError(f"{command}: {message}" if command else message, self.format_usage())


def emit(args: argparse.Namespace, data: Any, text: Sequence[str] | str) -> None:
    """Print `data` as one line of JSON with --json, else the lines `text`."""
    if getattr(args, "json", False):
        print(json.dumps(data, ensure_ascii=False, default=str))
    elif sys.stdout.isatty() and _rich(data):
        pass  # drawn: `inspect` tables and timelines on a terminal
    elif text:
        print(text if isinstance(text, str) else "\n".join(text))
    sys.stdout.flush()


def _rich(data: Any) -> bool:
    """On a terminal, `inspect` output drawn with rich; False: not one of its shapes."""
    from cuemsg.cli._render import render

    return render(data)


def report_error(message: str, code: int, *, as_json: bool, type: str = "Error") -> int:
    """Print one error (a line on stderr, or a JSON object on stdout); answer `code`."""
    if as_json:
        error = {"error": message, "type": type, "exit_code": code}
        print(json.dumps(error, ensure_ascii=False), flush=True)
    else:
        print(f"cuemsg: {message}", file=sys.stderr, flush=True)
    return code


def _base_url(args: argparse.Namespace) -> str:
    return str(getattr(args, "base_url", None) or os.environ.get("CUEAPI_BASE_URL") or "CueAPI")


def run_command(args: argparse.Namespace, func: Callable[[argparse.Namespace], int]) -> int:
    """Run a command, turning the failures a user can expect into an error and an exit code."""
    as_json = bool(getattr(args, "json", False))

    def fail(message: str, code: int, exc: BaseException) -> int:
        return report_error(message, code, as_json=as_json, type=type(exc).__name__)

    try:
        return func(args)
    except MissingAPIKey as exc:
        return fail(NO_KEY, USAGE, exc)
    except CommandError as exc:
        return fail(str(exc), exc.exit_code, exc)
    except CueAPIError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        return fail(f"{exc.status} {exc.code}: {exc.message}{where}", ERROR, exc)
    except TransportError as exc:
        return fail(f"cannot reach {_base_url(args)}: {exc}", ERROR, exc)
    except RequestTimeout as exc:
        return fail(f"request timed out ({exc.reason}): {exc}", TIMEOUT, exc)
    except RemoteError as exc:
        return fail(f"remote error: {exc.type}: {exc.message}", ERROR, exc)
    except CuemsgError as exc:  # EnvelopeError, MailboxError, ...
        return fail(str(exc), ERROR, exc)
    except BrokenPipeError:
        # The reader went away (`cuemsg listen | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return ERROR


def interrupted(summary: str, *, as_json: bool) -> int:
    """Ctrl-C: one line saying what was done, exit status 130."""
    return report_error(f"interrupted: {summary}", INTERRUPTED, as_json=as_json, type="Interrupted")
