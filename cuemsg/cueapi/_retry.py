"""Which failures are safe to retry, and how long to wait: no I/O here.

A failure is retried only when repeating the request cannot do twice what
the caller asked once:
- the request never left (connect error, connect or pool timeout): any call;
- 429 `rate_limited`: any call, after `Retry-After` (the server did not
  process it); a `Retry-After` longer than `max_retry_after` is not waited
  out, the `RateLimited` error goes to the caller instead;
- a lost answer (read error, read timeout, dropped connection) or a 5xx:
  only calls marked `retry_safe` in `_routes.py` (GET, PATCH, DELETE,
  heartbeats, and a fire that carries an `idempotency_key`).
Waits grow exponentially with jitter (half fixed, half random, so that
many clients do not retry in step), bounded by `backoff_max`, and at most
`max_retries` repeats follow the first try.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx

from cuemsg._exceptions import (
    CueAPIError,
    RateLimited,
    ServerError,
    TransportError,
    TransportTimeout,
)
from cuemsg.cueapi._routes import Answered, Call, Send, Sleep, Step, parse_answer

__all__ = ["DEFAULT_MAX_RETRIES", "RetryPolicy", "send_with_retries", "transport_error"]

logger = logging.getLogger("cuemsg.cueapi")

DEFAULT_MAX_RETRIES = 3
DEFAULT_BACKOFF_BASE = 0.2  # seconds before the first repeat (before jitter)
DEFAULT_BACKOFF_MAX = 5.0  # no single backoff wait is longer
DEFAULT_MAX_RETRY_AFTER = 60.0  # a longer Retry-After is the caller's decision

# Raised before any byte of the request reached the server: always safe to repeat.
_NOT_SENT: tuple[type[httpx.TransportError], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds and waits for repeating a failed request.

    Attributes:
        max_retries: repeats after the first try (0 disables retries).
        backoff_base: the first wait, doubled on every repeat.
        backoff_max: the longest single backoff wait.
        max_retry_after: the longest `Retry-After` waited out.
    """

    max_retries: int = DEFAULT_MAX_RETRIES
    backoff_base: float = DEFAULT_BACKOFF_BASE
    backoff_max: float = DEFAULT_BACKOFF_MAX
    max_retry_after: float = DEFAULT_MAX_RETRY_AFTER

    def backoff(self, retries_done: int, rand: Callable[[], float] = random.random) -> float:
        """The wait before repeat number `retries_done + 1`: half fixed, half jitter."""
        ceiling = min(self.backoff_max, self.backoff_base * 2.0**retries_done)
        return ceiling / 2 + rand() * ceiling / 2

    def after_transport_error(
        self, call: Call, exc: httpx.TransportError, retries_done: int
    ) -> float | None:
        """Seconds to wait before repeating `call` after `exc`, or None to give up."""
        if retries_done >= self.max_retries:
            return None
        if isinstance(exc, _NOT_SENT) or call.retry_safe:
            return self.backoff(retries_done)
        return None

    def after_error(self, call: Call, err: CueAPIError, retries_done: int) -> float | None:
        """Seconds to wait before repeating `call` after the error answer `err`, or None."""
        if retries_done >= self.max_retries:
            return None
        if isinstance(err, RateLimited):
            if err.retry_after is None:
                return self.backoff(retries_done)
            return err.retry_after if err.retry_after <= self.max_retry_after else None
        if isinstance(err, ServerError) and call.retry_safe:
            return self.backoff(retries_done)
        return None


def transport_error(call: Call, exc: httpx.TransportError) -> TransportError:
    """The cuemsg error for an httpx transport failure (raise it `from exc`)."""
    text = f"{call.method} {call.path}: {type(exc).__name__}: {exc}".rstrip(": ")
    if isinstance(exc, httpx.TimeoutException):
        return TransportTimeout(text)
    return TransportError(text)


def send_with_retries(call: Call, policy: RetryPolicy) -> Generator[Step, Any, Any]:
    """Flow: send `call`, repeating it as `policy` allows; return the decoded JSON answer.

    Yields `Send` (answered with an `Answered`, or an `httpx.TransportError`
    thrown in) and `Sleep` steps.

    Raises:
        CueAPIError: an error answer that is not retried (or retries ran out).
        TransportError: a transport failure that is not retried.
    """
    retries = 0
    ambiguous = False  # an earlier try may have been processed
    while True:
        try:
            response: Answered = yield Send(call)
        except httpx.TransportError as exc:
            delay = policy.after_transport_error(call, exc, retries)
            if delay is None:
                raise transport_error(call, exc) from exc
            ambiguous = ambiguous or not isinstance(exc, _NOT_SENT)
            logger.info("retrying %s %s in %.2fs after %r", call.method, call.path, delay, exc)
        else:
            if ambiguous and response.status_code in call.done_on_repeat:
                return None
            try:
                return parse_answer(response.status_code, response.headers, response.content)
            except CueAPIError as err:
                delay = policy.after_error(call, err, retries)
                if delay is None:
                    raise
                ambiguous = ambiguous or isinstance(err, ServerError)
                logger.info("retrying %s %s in %.2fs after %s", call.method, call.path, delay, err)
        retries += 1
        yield Sleep(delay)
