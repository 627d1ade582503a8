"""The `cuemsg` command line (also `python -m cuemsg`). The only place logging is set up.

`serve` and `demo` need nothing; `send`, `request`, `listen` and `inspect` talk
to CueAPI with the key in `CUEAPI_API_KEY` (or `--api-key`) at
`CUEAPI_BASE_URL` (or `--base-url`), and print text, or JSON with `--json`.
Expected failures print one line, `cuemsg: ...`, on stderr and exit non-zero
(see `EXIT_CODES`); only a bug prints a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from cuemsg import __version__
from cuemsg._exceptions import (
    CueAPIError,
    CuemsgError,
    LeaseLost,
    MissingAPIKey,
    RemoteError,
    RequestTimeout,
    TransportError,
)
from cuemsg._inspect import CommandError

if TYPE_CHECKING:
    from cuemsg.cueapi import CueClient
    from cuemsg.mailbox.sync import Message

#: What the exit status of a client command means.
EXIT_CODES = """exit status: 0 done; 1 an error (CueAPI said no, the server cannot be reached,
the responder's handler raised, no such mailbox); 2 bad usage or no API key;
3 a request got no reply in time (the message says why); 130 interrupted."""

#: The mailbox a command sends from when `--from` is not given.
DEFAULT_SENDER = "cli"
NO_KEY = "no CueAPI key: set CUEAPI_API_KEY or pass --api-key"


def _serve(args: argparse.Namespace) -> int:
    from cuemsg.server.app import create_app, ensure_dev_key, open_storage
    from cuemsg.server.run import Uvicorn
    from cuemsg.server.settings import ServerSettings

    try:
        settings = ServerSettings.from_env(
            db=args.db,
            lease_seconds=args.lease_seconds,
            unclaimed_timeout=args.unclaimed_timeout,
            rate_limit=args.rate_limit,
            sweep_interval=args.sweep_interval,
            extensions=False if args.no_extensions else None,
            access_log=args.access_log or None,
            # /metrics: on for loopback; beyond it, only when asked for.
            metrics=args.metrics or args.host in ("127.0.0.1", "localhost", "::1"),
        )
    except ValueError as exc:
        print(f"cuemsg serve: {exc}", file=sys.stderr)
        return 2
    storage = open_storage(settings)

    async def dev_key() -> str:
        await storage.open()
        try:
            return await ensure_dev_key(storage)
        finally:
            await storage.close()

    key = asyncio.run(dev_key())
    host = args.host
    url_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{url_host}:{args.port}"
    print(f"cuemsg {__version__} serving CueAPI on {base_url} (db: {settings.db})")
    print(f"development API key: {key}")
    print("point clients at it with:")
    print(f"  export CUEAPI_BASE_URL={base_url}")
    print(f"  export CUEAPI_API_KEY={key}")
    if settings.metrics:
        print(f"metrics: {base_url}/metrics")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}, reachable from other machines", file=sys.stderr)
    sys.stdout.flush()
    server = Uvicorn(
        create_app(settings),
        host=host,
        port=args.port,
        log_level="info" if args.access_log else "warning",
        access_log=settings.access_log,
    )
    server.run()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cuemsg.mailbox.demo import run_demo

    run_demo()
    return 0


# -- client commands ------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> CueClient:
    from cuemsg.cueapi import CueClient

    key = args.api_key or os.environ.get("CUEAPI_API_KEY")
    if not key:
        raise MissingAPIKey(NO_KEY)
    return CueClient(key, args.base_url or None)


def _body(text: str) -> Any:
    """BODY as given: JSON when it parses as JSON, else the text itself; `-` reads stdin."""
    if text == "-":
        text = sys.stdin.read().removesuffix("\n")  # `echo hi | cuemsg send x -` sends "hi"

    def no_constants(name: str) -> Any:
        raise ValueError(name)  # NaN and Infinity are not JSON: keep such text a string

    try:
        return json.loads(text, parse_constant=no_constants)
    except ValueError:
        return text


def _emit(args: argparse.Namespace, data: Any, text: Sequence[str] | str) -> None:
    """Print `data` as one line of JSON with --json, else the lines `text`."""
    if args.json:
        print(json.dumps(data, ensure_ascii=False, default=str))
    elif not (sys.stdout.isatty() and _rich(data)):
        print(text if isinstance(text, str) else "\n".join(text))
    sys.stdout.flush()


def _rich(data: Any) -> bool:
    """On a terminal, `inspect` output drawn with rich (tables, timelines); False: not one."""
    from cuemsg._render import render

    return render(data)


def _send(args: argparse.Namespace) -> int:
    from cuemsg._inspect import find_mailbox
    from cuemsg.mailbox.sync import Mailbox

    body = _body(args.body)
    with _client(args) as client:
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
    _emit(
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

    body = _body(args.body)
    with _client(args) as client:
        cue = find_mailbox(client, args.to)
        # A short long-poll: closing waits for the reply stream's current poll to end.
        with Mailbox.open(client, args.sender, poll_wait=1.0) as mb:
            started = time.monotonic()
            reply = mb.request(cue.id, body, timeout=args.timeout)
            elapsed = time.monotonic() - started
            data = {"reply": reply, "to": cue.id, "from": mb.address, "seconds": elapsed}
    _emit(args, data, json.dumps(reply, ensure_ascii=False, indent=2, default=str))
    return 0


def _message_json(msg: Message[Any], sender_name: str | None) -> dict[str, Any]:
    return {
        "id": msg.id,
        "execution_id": msg.execution_id,
        "kind": msg.kind,
        "sender": msg.sender,
        "sender_name": sender_name,
        "thread": msg.thread,
        "correlation_id": msg.correlation_id,
        "sent_at": msg.sent_at.isoformat() if msg.sent_at else None,
        "attempt": msg.attempt,
        "deliveries": msg.deliveries,
        "headers": msg.headers,
        "foreign": msg.foreign,
        "body": msg.body,
    }


def _message_text(msg: Message[Any], sender: str) -> str:
    tags: list[str] = [] if msg.kind == "message" else [msg.kind]
    if msg.thread:
        tags.append(f"thread {msg.thread}")
    if msg.deliveries > 1:
        tags.append(f"delivery {msg.deliveries}")
    tag = f" [{', '.join(tags)}]" if tags else ""
    body = json.dumps(msg.body, ensure_ascii=False, default=str)
    return f"{msg.id} from {sender}{tag}: {body}"


@contextlib.contextmanager
def _ctrl_c_after() -> Iterator[None]:
    """Hold a first Ctrl-C until the block is done, then raise it; a second one goes through."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or not callable(previous):
        yield  # signals go to the main thread only; SIG_IGN or SIG_DFL: nothing to hold
        return
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)
        signal.signal(signal.SIGINT, previous)

    signal.signal(signal.SIGINT, hold)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


def _listen(args: argparse.Namespace) -> int:
    from cuemsg._inspect import Names
    from cuemsg.mailbox.sync import Mailbox

    count = 0
    with _client(args) as client:
        names = Names(client)
        mb = Mailbox.open(client, args.name)
        try:
            print(
                f"listening on {mb.name} ({mb.address}, task {mb.task}) as {mb.worker_id}; "
                "Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            for msg in mb.receive(wait=args.wait, limit=args.limit):
                with _ctrl_c_after():  # a message printed is a message acked
                    sender = names.name(msg.sender)
                    _emit(
                        args,
                        _message_json(msg, sender),
                        _message_text(msg, sender or msg.sender or "-"),
                    )
                    count += 1
                    try:
                        msg.ack(f"received by cuemsg listen ({mb.worker_id})")
                    except LeaseLost as exc:
                        print(f"cuemsg: {exc}", file=sys.stderr)
        except KeyboardInterrupt:
            pass  # Ctrl-C is how a listen without --wait or --limit ends
        finally:
            mb.close()
    print(f"received {count} message(s)", file=sys.stderr)
    return 0


def _inspect_mailboxes(args: argparse.Namespace) -> int:
    from cuemsg._inspect import all_cues, is_mailbox, mailbox_row, table

    with _client(args) as client:
        rows = [mailbox_row(c) for c in all_cues(client) if is_mailbox(c)]
    rows.sort(key=lambda r: str(r["name"]))
    text = (
        table(
            [[r["name"], r["address"], r["task"], r["fired_count"]] for r in rows],
            ["NAME", "ADDRESS", "TASK", "FIRED"],
        )
        if rows
        else ["no mailboxes"]
    )
    _emit(args, {"mailboxes": rows}, text)
    return 0


def _inspect_messages(args: argparse.Namespace) -> int:
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

    with _client(args) as client:
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
    _emit(args, {"mailbox": mailbox_row(cue), "messages": rows}, text)
    return 0


def _inspect_dead_letters(args: argparse.Namespace) -> int:
    from cuemsg._inspect import Names, dead_letter_lines, executions, find_mailbox, message_row

    with _client(args) as client:
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
    _emit(args, {"dead_letters": rows}, text)
    return 0


def _inspect_message(args: argparse.Namespace) -> int:
    from cuemsg._inspect import Names, record, record_lines

    with _client(args) as client:
        found = record(client, args.execution_id)
        text = [] if args.json else record_lines(found, Names(client))
    _emit(args, found, text)
    return 0


def _positive(kind: Callable[[str], Any], *, zero: bool = False) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


def _client_options() -> argparse.ArgumentParser:
    """The options every client command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    _connection_options(group, default=argparse.SUPPRESS)
    group.add_argument("--json", action="store_true", help="print machine-readable JSON")
    return common


def _connection_options(group: Any, default: Any) -> None:
    """--api-key and --base-url: accepted before the command and after it.

    After it, their default is SUPPRESS, so that an absent option leaves the
    value given before the command in place.
    """
    group.add_argument("--api-key", default=default, help="CueAPI key (default: $CUEAPI_API_KEY)")
    group.add_argument(
        "--base-url",
        default=default,
        help="CueAPI URL (default: $CUEAPI_BASE_URL, else https://api.cueapi.ai)",
    )


def _add_client_commands(sub: Any) -> None:
    common = [_client_options()]
    to_help = "recipient: a mailbox name, or its address (cue id, cue_...)"
    body_help = (
        "the body, as JSON (an object, a number, a quoted string...); text that is not "
        "valid JSON is sent as a plain string; '-' reads it from stdin"
    )
    from_help = f"the mailbox to send from, created if needed (default {DEFAULT_SENDER!r})"

    send = sub.add_parser(
        "send",
        parents=common,
        help="send one message to a mailbox",
        description="Send one message; prints its message id and execution id.",
        epilog=EXIT_CODES,
    )
    send.add_argument("to", metavar="TO", help=to_help)
    send.add_argument("body", metavar="BODY", help=body_help)
    send.add_argument(
        "--from", dest="sender", metavar="NAME", default=DEFAULT_SENDER, help=from_help
    )
    send.add_argument("--task", help="routing task (default: the recipient's own)")
    send.add_argument("--thread", help="conversation id, carried over by replies")
    send.add_argument(
        "--ttl", type=_positive(float), help="seconds after which receivers skip the message"
    )
    send.set_defaults(func=_send)

    request = sub.add_parser(
        "request",
        parents=common,
        help="send a request and print its reply",
        description=(
            "Send a request and wait for the reply of a mailbox that serves it; prints the "
            "reply body as JSON. The reply comes back to the --from mailbox, on a reply "
            "stream of this command alone."
        ),
        epilog=EXIT_CODES,
    )
    request.add_argument("to", metavar="TO", help=to_help)
    request.add_argument("body", metavar="BODY", help=body_help)
    request.add_argument(
        "--from", dest="sender", metavar="NAME", default=DEFAULT_SENDER, help=from_help
    )
    request.add_argument(
        "--timeout", type=_positive(float), default=30.0, help="seconds to wait (default 30)"
    )
    request.set_defaults(func=_request)

    listen = sub.add_parser(
        "listen",
        parents=common,
        help="print (and ack) the messages arriving at a mailbox",
        description=(
            "Receive on mailbox NAME (created if needed) and print each message as it "
            "comes: id, sender, body (one JSON object a line with --json), acking it. "
            "Runs until --wait idle seconds, --limit messages, or Ctrl-C."
        ),
        epilog=EXIT_CODES,
    )
    listen.add_argument("name", metavar="NAME", help="the mailbox to receive on")
    listen.add_argument(
        "--wait", type=_positive(float, zero=True), help="stop after this many idle seconds"
    )
    listen.add_argument("--limit", type=_positive(int), help="stop after this many messages")
    listen.set_defaults(func=_listen)

    inspect = sub.add_parser(
        "inspect",
        help="read mailboxes, messages and dead letters from CueAPI",
        description="What CueAPI recorded: mailboxes, their messages, dead letters, one message.",
        epilog=EXIT_CODES,
    )
    what = inspect.add_subparsers(dest="what", metavar="WHAT", required=True)
    mailboxes = what.add_parser(
        "mailboxes", parents=common, help="the mailboxes: name, address, task, fired count"
    )
    mailboxes.set_defaults(func=_inspect_mailboxes)

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
        "--limit", type=_positive(int), default=20, help="at most this many (default 20)"
    )
    messages.set_defaults(func=_inspect_messages)

    dead = what.add_parser(
        "dead-letters",
        parents=common,
        help="failed executions with their error",
        description="Failed executions (rejected, expired, or out of claims), with their error.",
    )
    dead.add_argument("name", metavar="NAME", nargs="?", help="only this mailbox's")
    dead.add_argument(
        "--limit", type=_positive(int), default=50, help="at most this many (default 50)"
    )
    dead.set_defaults(func=_inspect_dead_letters)

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
    message.set_defaults(func=_inspect_message)


def _error(message: str, code: int) -> int:
    print(f"cuemsg: {message}", file=sys.stderr)
    return code


def _run(args: argparse.Namespace) -> int:
    """Run the command, turning the failures a user can expect into one line and an exit code."""
    try:
        return int(args.func(args))
    except MissingAPIKey:
        return _error(NO_KEY, 2)
    except CommandError as exc:
        return _error(str(exc), exc.exit_code)
    except CueAPIError as exc:
        where = f" (field: {exc.field})" if exc.field else ""
        return _error(f"{exc.status} {exc.code}: {exc.message}{where}", 1)
    except TransportError as exc:
        url = getattr(args, "base_url", None) or os.environ.get("CUEAPI_BASE_URL") or "CueAPI"
        return _error(f"cannot reach {url}: {exc}", 1)
    except RequestTimeout as exc:
        return _error(f"request timed out ({exc.reason}): {exc}", 3)
    except RemoteError as exc:
        return _error(f"remote error: {exc.type}: {exc.message}", 1)
    except CuemsgError as exc:  # EnvelopeError, MailboxError, ...
        return _error(str(exc), 1)
    except BrokenPipeError:
        # The reader went away (`cuemsg listen | head`): stop quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cuemsg",
        description="Accountable messaging between AI agents on CueAPI.",
        epilog=EXIT_CODES,
    )
    parser.add_argument("--version", action="version", version=f"cuemsg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    _connection_options(
        parser.add_argument_group("connection (send, request, listen, inspect)"), default=None
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the embedded CueAPI server")
    serve.add_argument(
        "--db",
        default=None,
        help="SQLite file, :memory:, or postgresql:// URL (env CUEMSG_DB; default cuemsg.db)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port (default 8787)")
    serve.add_argument("--lease-seconds", type=float, default=None, help="claim lease (60)")
    serve.add_argument(
        "--unclaimed-timeout", type=float, default=None, help="seconds to 'missed' (0 = never)"
    )
    serve.add_argument(
        "--sweep-interval", type=float, default=None, help="seconds between lease checks (0.5)"
    )
    serve.add_argument("--rate-limit", type=int, default=None, help="requests/min/key (0 = off)")
    serve.add_argument(
        "--no-extensions", action="store_true", help="serve the plain CueAPI contract only"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.add_argument(
        "--metrics",
        action="store_true",
        help="serve /metrics (Prometheus) beyond loopback too (on loopback it always is)",
    )
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="two agents messaging through an in-process server")
    demo.set_defaults(func=_demo)
    _add_client_commands(sub)
    from cuemsg._tail import add_commands  # tail and redrive

    add_commands(sub, [_client_options()], _client)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return _run(args)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
