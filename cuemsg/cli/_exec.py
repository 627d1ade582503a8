"""`listen --exec CMD`: run CMD per message, body on stdin, envelope in the environment.

CMD runs in a shell, in a session of its own (so a timeout kills all it
started). Its stdout, parsed as JSON, is a request's reply; a non-zero exit,
a timeout, or stdout that is not JSON fails the message: a request's
requester gets a `RemoteError` of that type, a one-way message is rejected.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
from typing import Any

#: The environment variables CMD gets, and the message field each holds ("" when unset).
ENV_FIELDS = {
    "CUEMSG_MESSAGE_ID": "id",
    "CUEMSG_EXECUTION_ID": "execution_id",
    "CUEMSG_KIND": "kind",
    "CUEMSG_SENDER": "sender",
    "CUEMSG_THREAD": "thread",
    "CUEMSG_CORRELATION_ID": "correlation_id",
    "CUEMSG_ATTEMPT": "attempt",
    "CUEMSG_DELIVERIES": "deliveries",
    "CUEMSG_SENT_AT": "sent_at",
}
#: How many of stderr's last lines a failure carries.
STDERR_LINES = 5


class CommandFailed(Exception):
    """CMD exited non-zero; the message names the status and stderr's last lines."""


class CommandTimedOut(Exception):
    """CMD ran longer than --timeout and was killed."""


class BadReply(Exception):
    """CMD's stdout is not the JSON a request's reply must be."""


def environment(msg: Any, mailbox: str, sender_name: str | None) -> dict[str, str]:
    """The environment CMD runs in: ours, plus the message's envelope fields."""
    env = dict(os.environ)
    for name, attr in ENV_FIELDS.items():
        value = getattr(msg, attr, None)
        env[name] = "" if value is None else str(value)
    env["CUEMSG_SENDER_NAME"] = sender_name or ""
    env["CUEMSG_MAILBOX"] = mailbox
    return env


def _tail(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    return "\n".join(lines[-STDERR_LINES:])


class Interrupted(Exception):
    """`listen` was stopped (Ctrl-C, SIGTERM) while CMD ran: CMD was killed, the message
    is handed back."""


class Runner:
    """Runs CMD, one process per message, and can kill every one running (on Ctrl-C).

    CMD runs in a session of its own, so the terminal's Ctrl-C does not reach
    it: `interrupt()` is how it is stopped.
    """

    def __init__(self, command: str, *, timeout: float | None) -> None:
        self.command = command
        self.timeout = timeout
        self.interrupted = False
        self._running: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def interrupt(self) -> None:
        """Kill every CMD running now; those messages raise `Interrupted`."""
        with self._lock:
            self.interrupted = True
            running = list(self._running)
        for proc in running:
            _kill(proc)

    def run(self, body: Any, env: dict[str, str]) -> str:
        """Run CMD with `body` (as JSON) on stdin; answer its stdout.

        Raises:
            CommandFailed: a non-zero exit (or killed by a signal).
            CommandTimedOut: still running after `timeout` seconds (it is killed).
            Interrupted: `interrupt()` killed it.
        """
        proc = subprocess.Popen(
            self.command,
            shell=True,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,  # its own process group: a kill reaches what it started
        )
        with self._lock:
            self._running.add(proc)
        try:
            out, err = proc.communicate(json.dumps(body, ensure_ascii=False), timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            proc.communicate()
            raise CommandTimedOut(
                f"{self.command!r} ran over {self.timeout:g} s and was killed"
            ) from None
        except KeyboardInterrupt:  # Ctrl-C in this thread while it runs: never leave it behind
            _kill(proc)
            proc.communicate()
            if self.interrupted:
                raise Interrupted(f"{self.command!r} was killed: listen was stopped") from None
            raise
        finally:
            with self._lock:
                self._running.discard(proc)
        if self.interrupted and proc.returncode < 0:
            raise Interrupted(f"{self.command!r} was killed: listen was stopped")
        if proc.returncode != 0:
            status = (
                f"killed by signal {-proc.returncode}"
                if proc.returncode < 0
                else f"exited {proc.returncode}"
            )
            tail = _tail(err)
            raise CommandFailed(f"{self.command!r} {status}" + (f": {tail}" if tail else ""))
        return out


def _kill(proc: subprocess.Popen[str]) -> None:
    with contextlib.suppress(ProcessLookupError):  # it has just ended on its own
        os.killpg(proc.pid, signal.SIGKILL)


def parse_reply(command: str, stdout: str) -> Any:
    """A request's reply: CMD's stdout as JSON, strictly.

    Raises:
        BadReply: stdout is empty or not JSON.
    """
    if not stdout.strip():
        raise BadReply(f"{command!r} printed nothing; a request's reply is JSON on stdout")

    def no_constants(name: str) -> Any:
        raise BadReply(f"{command!r} printed {name}, which is not JSON")

    try:
        return json.loads(stdout, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise BadReply(
            f"{command!r} printed what is not JSON ({exc.msg} at line {exc.lineno} "
            f"column {exc.colno}): {stdout[:200]!r}"
        ) from None
