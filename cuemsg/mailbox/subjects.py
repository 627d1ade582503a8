"""Topic names and subscription patterns, NATS style: pure checks and matching.

A topic is dotted tokens (`docs.new`, `build.failed.linux`). A pattern
may use two wildcards, each a whole token: `*` matches exactly one token
(`docs.*` matches `docs.new`, not `docs.new.pdf`), `>` matches one or more
tokens and only ends a pattern (`docs.>` matches both, not `docs`).
"""

from __future__ import annotations

#: Longest pattern or topic (a subscription's cue name holds its pattern).
MAX_SUBJECT_LENGTH = 200

__all__ = ["MAX_SUBJECT_LENGTH", "check_pattern", "check_topic", "matches"]


def _tokens(kind: str, text: object) -> list[str]:
    if not isinstance(text, str):
        raise ValueError(f"a {kind} must be a string, not {type(text).__name__}")
    if not text:
        raise ValueError(f"a {kind} must not be empty")
    if len(text) > MAX_SUBJECT_LENGTH:
        raise ValueError(
            f"{kind} {text[:40]!r}... is {len(text)} characters, over {MAX_SUBJECT_LENGTH}"
        )
    if any(c.isspace() for c in text):
        raise ValueError(f"{kind} {text!r} contains white space")
    tokens = text.split(".")
    if "" in tokens:
        raise ValueError(f"{kind} {text!r} has an empty token (a leading, trailing or double dot)")
    return tokens


def check_topic(topic: str) -> str:
    """`topic` when it is a valid topic to publish on (no wildcards).

    Raises:
        ValueError: it is not (the message says what is wrong).
    """
    for token in _tokens("topic", topic):
        if token in ("*", ">"):
            raise ValueError(
                f"topic {topic!r} contains the wildcard {token!r}: "
                "wildcards are for subscriptions, a publication names one topic"
            )
    return topic


def check_pattern(pattern: str) -> str:
    """`pattern` when it is a valid subscription pattern.

    Raises:
        ValueError: it is not (the message says what is wrong).
    """
    tokens = _tokens("pattern", pattern)
    if ">" in tokens[:-1]:
        raise ValueError(f"pattern {pattern!r}: '>' may only be the last token")
    return pattern


def matches(pattern: str, topic: str) -> bool:
    """True when a message published on `topic` goes to a subscription to `pattern`."""
    want = pattern.split(".")
    have = topic.split(".")
    for i, token in enumerate(want):
        if token == ">":
            return len(have) > i
        if i >= len(have) or (token != "*" and token != have[i]):
            return False
    return len(want) == len(have)
