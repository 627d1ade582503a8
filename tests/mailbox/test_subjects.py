"""Topic and pattern checks and NATS-style matching (`cuemsg.mailbox.subjects`), pure."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cuemsg.mailbox.subjects import MAX_SUBJECT_LENGTH, check_pattern, check_topic, matches

tokens = st.text(alphabet="abcxyz019-_", min_size=1, max_size=4)
topics = st.lists(tokens, min_size=1, max_size=6).map(".".join)


def reference(pattern: str, topic: str) -> bool:
    """The same rule written another way: a pattern as a regular expression."""
    parts = []
    for token in pattern.split("."):
        if token == "*":
            parts.append(r"[^.]+")
        elif token == ">":
            parts.append(r"[^.]+(\.[^.]+)*")
        else:
            parts.append(re.escape(token))
    return re.fullmatch(r"\.".join(parts), topic) is not None


@st.composite
def pattern_and_topic(draw: st.DrawFn) -> tuple[str, str]:
    """A topic, and a pattern made from it or from another topic (so both answers occur)."""
    topic = draw(topics)
    source = draw(st.one_of(st.just(topic), topics)).split(".")
    pattern = [draw(st.sampled_from([t, "*"])) for t in source]
    if draw(st.booleans()):
        pattern = [*pattern[: draw(st.integers(0, len(pattern) - 1))], ">"]
    return ".".join(pattern), topic


@settings(max_examples=300, deadline=None)
@given(pattern_and_topic())
def test_matches_agrees_with_a_regular_expression(case: tuple[str, str]) -> None:
    pattern, topic = case
    check_pattern(pattern)
    check_topic(topic)
    assert matches(pattern, topic) == reference(pattern, topic)


@settings(max_examples=200, deadline=None)
@given(topics, st.data())
def test_wildcards_built_from_a_topic_match_it(topic: str, data: st.DataObject) -> None:
    parts = topic.split(".")
    assert matches(topic, topic)
    starred = [data.draw(st.sampled_from([t, "*"])) for t in parts]
    assert matches(".".join(starred), topic)
    cut = data.draw(st.integers(0, len(parts) - 1))
    assert matches(".".join([*parts[:cut], ">"]), topic)
    assert not matches(".".join([*parts, ">"]), topic)  # '>' needs at least one more token
    assert not matches(".".join([*parts, "*"]), topic)
    assert not matches(topic, topic + ".more")


@pytest.mark.parametrize(
    ("pattern", "topic", "expected"),
    [
        ("docs.new", "docs.new", True),
        ("docs.*", "docs.new", True),
        ("docs.*", "docs.new.pdf", False),
        ("docs.>", "docs.new.pdf", True),
        ("docs.>", "docs", False),
        ("*.new", "docs.new", True),
        (">", "anything.at.all", True),
        ("docs.new", "docs.old", False),
    ],
)
def test_examples(pattern: str, topic: str, expected: bool) -> None:
    assert matches(pattern, topic) is expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty"),
        ("docs..new", "empty token"),
        (".docs", "empty token"),
        ("docs.", "empty token"),
        ("docs new", "white space"),
        ("a.>.b", "'>' may only be the last token"),
        ("x" * (MAX_SUBJECT_LENGTH + 1), f"over {MAX_SUBJECT_LENGTH}"),
        (3, "must be a string, not int"),
    ],
)
def test_bad_patterns_are_named(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_pattern(value)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("docs.*", "contains the wildcard '*'"),
        ("docs.>", "contains the wildcard '>'"),
        ("docs..new", "empty token"),
    ],
)
def test_bad_topics_are_named(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        check_topic(value)
