"""Secrets out of log lines: API keys, bearer tokens and secret-looking
query parameters are replaced by `***` in every record the server logs
(its own, uvicorn's error log and the access log, query strings included).

`install()` puts `RedactSecrets` on the server's loggers and on every handler
they and the root logger write through, so a record is cleaned wherever it
was made.
"""

from __future__ import annotations

import logging
import re

_KEY = re.compile(r"cue_sk_[A-Za-z0-9]+")
_BEARER = re.compile(r"(?i)(bearer\s+)[^\s\"',]+")
_QUERY = re.compile(
    r"(?i)([?&](?:api[_-]?key|key|token|access[_-]?token|secret|password|signature)=)[^&\s\"']*"
)
LOGGERS = ("cuemsg", "cuemsg.server", "uvicorn", "uvicorn.error", "uvicorn.access")


def redact(text: str) -> str:
    """`text` with API keys, bearer tokens and secret query values as `***`."""
    text = _KEY.sub("cue_sk_***", text)
    text = _BEARER.sub(r"\1***", text)
    return _QUERY.sub(r"\1***", text)


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and string arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.args, dict):
            record.args = {
                k: redact(v) if isinstance(v, str) else v for k, v in record.args.items()
            }
        return True


_FILTER = RedactSecrets()


def install() -> None:
    """Clean every record the server's loggers (and their handlers) pass on."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
        for handler in logger.handlers:
            if _FILTER not in handler.filters:
                handler.addFilter(_FILTER)
    for handler in logging.getLogger().handlers:
        if _FILTER not in handler.filters:
            handler.addFilter(_FILTER)
