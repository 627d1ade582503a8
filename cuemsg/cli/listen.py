"""`cuemsg listen`: print the messages arriving at a mailbox, or answer them with `--exec`.

Without `--exec`, each message is printed and acked, except requests: those
are left unsettled (their lease renewed while `listen` runs) for `cuemsg
reply EXECUTION_ID BODY` to answer. With `--exec CMD`, CMD runs per message
(see `_exec.py`). Ctrl-C and SIGTERM stop it with exit status 130.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cuemsg._exceptions import LeaseLost, RetryLater
from cuemsg.cli import _exec
from cuemsg.cli._connect import make_client, positive
from cuemsg.cli._output import EXIT_CODES, UsageError, emit, interrupted

if TYPE_CHECKING:
    from cuemsg._inspect import Names
    from cuemsg.mailbox.sync import Mailbox, Message

#: What a request left for `cuemsg reply` is marked as (so the receive loop does not ack it).
#: A server that stopped answering is reported once, then at most this often.
OUTAGE_REPORT_EVERY = 30.0
_STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@dataclass
class _Tally:
    received: int = 0
    left: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def summary(self) -> str:
        left = f", {self.left} request(s) left for `cuemsg reply`" if self.left else ""
        return f"received {self.received} message(s){left}"


class _Quieter(logging.Filter):
    """Keeps listen's stderr readable: a dead server said once per 30 s, no echoes.

    Drops the mailbox's "lease lost" warning for a request that `cuemsg reply`
    answered (that is what it is for), and, with --exec, the handler-failed
    warning that listen's own output line already says.
    """

    def __init__(self, *, exec_mode: bool, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.left: set[str] = set()
        self.exec_mode = exec_mode
        self.clock = clock
        self.last_outage: float | None = None

    def message_arrived(self) -> None:
        self.last_outage = None  # the next outage is news again

    def filter(self, record: logging.LogRecord) -> bool:
        text = str(record.msg)
        if text.startswith("claiming task"):
            now = self.clock()
            if self.last_outage is not None and now - self.last_outage < OUTAGE_REPORT_EVERY:
                return False
            self.last_outage = now
            why = record.args[-1] if isinstance(record.args, tuple) and record.args else "?"
            record.msg = "the server is not answering (%s); listen keeps trying, %s"
            record.args = (why, f"and says so again every {OUTAGE_REPORT_EVERY:g} s")
            return True
        if self.exec_mode and text.startswith("handler failed"):
            return False
        message = record.getMessage()
        return not (message.startswith("lost the lease") and any(e in message for e in self.left))


@contextlib.contextmanager
def _stop_signals(on_stop: Callable[[], None]) -> Iterator[None]:
    """Ctrl-C and SIGTERM call `on_stop`, then raise KeyboardInterrupt, for the duration."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: Any) -> None:
        on_stop()
        raise KeyboardInterrupt

    previous = {s: signal.signal(s, stop) for s in _STOP_SIGNALS}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@contextlib.contextmanager
def _signals_after() -> Iterator[None]:
    """Hold a first Ctrl-C/SIGTERM until the block is done, then raise it; a second goes through."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signals go to the main thread only
        return
    previous = {s: signal.getsignal(s) for s in _STOP_SIGNALS}
    held: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        held.append(signum)
        for s, handler in previous.items():
            signal.signal(s, handler)

    for s in _STOP_SIGNALS:
        if callable(previous[s]):
            signal.signal(s, hold)
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if held:
        raise KeyboardInterrupt


def message_json(msg: Message[Any], sender_name: str | None) -> dict[str, Any]:
    """A received message as `listen --json` prints it."""
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


def message_text(msg: Message[Any], sender: str) -> str:
    """A received message as one line: id, sender, tags, body."""
    tags: list[str] = [] if msg.kind == "message" else [msg.kind]
    if msg.thread:
        tags.append(f"thread {msg.thread}")
    if msg.deliveries > 1:
        tags.append(f"delivery {msg.deliveries}")
    tag = f" [{', '.join(tags)}]" if tags else ""
    body = json.dumps(msg.body, ensure_ascii=False, default=str)
    return f"{msg.id} from {sender}{tag}: {body}"


def _answerable(msg: Message[Any]) -> bool:
    return msg.kind == "request" and bool(msg.reply_cue_id)


def _receive(
    args: argparse.Namespace, mb: Mailbox, names: Names, quiet: _Quieter, tally: _Tally
) -> None:
    """Print each message; ack it, or leave a request for `cuemsg reply`."""
    for msg in mb.receive(wait=args.wait, limit=args.limit):
        quiet.message_arrived()
        with _signals_after():  # a message printed is a message settled (or left)
            sender = names.name(msg.sender)
            leave = _answerable(msg)
            data = message_json(msg, sender)
            data["settled"] = "left" if leave else "acked"
            emit(args, data, message_text(msg, sender or msg.sender or "-"))
            tally.received += 1
            if leave:
                msg.leave()  # the loop acks only what is unsettled
                quiet.left.add(msg.execution_id)
                tally.left += 1
                print(
                    f"  request left unacked; answer it with: cuemsg reply {msg.execution_id} BODY",
                    file=sys.stderr,
                    flush=True,
                )
                continue
            try:
                msg.ack(f"received by cuemsg listen ({mb.worker_id})")
            except LeaseLost as exc:
                print(f"cuemsg: {exc}", file=sys.stderr)


def _serve_exec(
    args: argparse.Namespace,
    mb: Mailbox,
    names: Names,
    quiet: _Quieter,
    tally: _Tally,
    runner: _exec.Runner,
) -> None:
    """Run --exec per message, --concurrency at a time; print what came of each."""
    lookups = threading.Lock()
    printing = threading.Lock()

    def report(msg: Message[Any], sender: str | None, outcome: str, error: str | None) -> None:
        data = message_json(msg, sender) | {"outcome": outcome, "error": error}
        text = message_text(msg, sender or msg.sender or "-") + f" -> {outcome}"
        with printing:
            emit(args, data, text + (f" ({error})" if error else ""))

    def handle(msg: Message[Any]) -> Any:
        quiet.message_arrived()
        with lookups:
            sender = names.name(msg.sender)
        request = _answerable(msg)
        with tally.lock:
            tally.received += 1
            if args.limit is not None and tally.received >= args.limit:
                mb.stop()
        try:
            out = runner.run(msg.body, _exec.environment(msg, mb.name, sender))
            reply = _exec.parse_reply(runner.command, out) if request else None
        except _exec.Interrupted as exc:
            report(msg, sender, "handed back", str(exc))
            raise RetryLater(0, str(exc)) from None  # delivered again at once, to anyone
        except (_exec.CommandFailed, _exec.CommandTimedOut, _exec.BadReply) as exc:
            report(
                msg,
                sender,
                "error reply" if request else "rejected",
                f"{type(exc).__name__}: {exc}",
            )
            raise
        report(msg, sender, "replied" if request else "acked", None)
        return reply

    mb.serve(handle, concurrency=args.concurrency, idle_timeout=args.wait)


def _listen(args: argparse.Namespace) -> int:
    from cuemsg._inspect import Names
    from cuemsg.mailbox.sync import Mailbox

    if args.exec is None and (args.concurrency != 1 or args.timeout is not None):
        raise UsageError("listen: --concurrency and --timeout go with --exec")
    tally = _Tally()
    quiet = _Quieter(exec_mode=args.exec is not None)
    logger = logging.getLogger("cuemsg.mailbox")
    stopped = False
    runner = _exec.Runner(args.exec, timeout=args.timeout) if args.exec else None
    opened: list[Mailbox] = []

    def on_stop() -> None:
        if runner is not None:
            for mailbox in opened:
                mailbox.stop()  # a handler running in this thread hands its message back
            runner.interrupt()

    with make_client(args) as client, _stop_signals(on_stop):
        names = Names(client)
        mb = Mailbox.open(client, args.name)
        opened.append(mb)
        logger.addFilter(quiet)
        try:
            doing = f"running {args.exec!r} per message" if args.exec else "printing messages"
            print(
                f"listening on {mb.name} ({mb.address}, task {mb.task}) as {mb.worker_id}, "
                f"{doing}; Ctrl-C stops",
                file=sys.stderr,
                flush=True,
            )
            if runner is None:
                _receive(args, mb, names, quiet, tally)
            else:
                _serve_exec(args, mb, names, quiet, tally, runner)
        except KeyboardInterrupt:
            stopped = True  # Ctrl-C (or SIGTERM) is how a listen without --wait/--limit ends
        finally:
            with _signals_after():
                mb.close()
            logger.removeFilter(quiet)
    if stopped or (runner is not None and runner.interrupted):
        return interrupted(tally.summary(), as_json=args.json)
    print(tally.summary(), file=sys.stderr)
    return 0


def add_commands(sub: Any, common: list[argparse.ArgumentParser]) -> None:
    """`listen`."""
    listen = sub.add_parser(
        "listen",
        parents=common,
        help="print the messages arriving at a mailbox (or answer them with --exec)",
        description=(
            "Receive on mailbox NAME (created if needed) and print each message as it "
            "comes: id, sender, body (one JSON object a line with --json). Messages are "
            "acked; requests are left for `cuemsg reply EXECUTION_ID BODY` (their lease "
            "is renewed while listen runs). With --exec CMD, CMD runs per message: the "
            "body as JSON on stdin, the envelope in CUEMSG_* environment variables "
            "(MESSAGE_ID, EXECUTION_ID, KIND, SENDER, SENDER_NAME, THREAD, "
            "CORRELATION_ID, ATTEMPT, DELIVERIES, SENT_AT, MAILBOX); a request's reply "
            "is its stdout, parsed as JSON; a non-zero exit, bad JSON or a timeout sends "
            "the requester an error (a one-way message is rejected). Runs until --wait "
            "idle seconds, --limit messages, Ctrl-C or SIGTERM (which kill the commands "
            "running and hand their messages back)."
        ),
        epilog=EXIT_CODES,
    )
    listen.add_argument("name", metavar="NAME", help="the mailbox to receive on")
    listen.add_argument(
        "--wait", type=positive(float, zero=True), help="stop after this many idle seconds"
    )
    listen.add_argument("--limit", type=positive(int), help="stop after this many messages")
    listen.add_argument("--exec", metavar="CMD", help="run this shell command per message")
    listen.add_argument(
        "--concurrency",
        type=positive(int),
        default=1,
        help="with --exec: commands running at once (default 1)",
    )
    listen.add_argument(
        "--timeout",
        type=positive(float),
        help="with --exec: kill a command running longer (seconds; the message fails)",
    )
    listen.set_defaults(func=_listen)
