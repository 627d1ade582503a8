"""The sync and async mailboxes keep one public surface.

`Mailbox`/`AsyncMailbox` and `Message`/`AsyncMessage` are written by hand
(their drivers differ: threads and a condition vs task groups and events),
not generated. What must not drift is what a user sees: the same public
names, parameters, defaults, annotations and method docstrings, overloads
included (the class docstrings say how each twin runs, so they differ).
Two texts are equal here once the async spelling is mapped to the sync one
(`AsyncMailbox` -> `Mailbox`, `await x` -> `x`, `async with` -> `with`,
`Awaitable[R] | R` -> `R`...), so any other difference fails.
"""

from __future__ import annotations

import inspect
import re
import sys
import typing
from collections.abc import Callable
from typing import Any

import pytest

from cuemsg.mailbox import AsyncMailbox, AsyncMessage, Mailbox, Message


def own_mixins(cls: type, other: type) -> list[type]:
    """The cuemsg bases of `cls` that `other` does not share: its twin mixins."""
    return [
        base
        for base in cls.__mro__[1:]
        if base.__module__.startswith("cuemsg.") and base not in other.__mro__
    ]


def mixin_pairs() -> list[tuple[type, type]]:
    """Each mixin of `Mailbox` (send, settle, threads, tickets...) with its async twin."""
    sync_mixins = own_mixins(Mailbox, AsyncMailbox)
    async_mixins = {base.__name__: base for base in own_mixins(AsyncMailbox, Mailbox)}
    return [(base, async_mixins.get("Async" + base.__name__, object)) for base in sync_mixins]


# The twins, and the mixins that carry most of the mailboxes' public methods.
PAIRS = [(Mailbox, AsyncMailbox), (Message, AsyncMessage), *mixin_pairs()]

#: Async spellings and their sync equivalents, applied in order.
ASYNC_TO_SYNC = [
    (r"\bAwaitable\[(\w+)\] \| \1\b", r"\1"),
    (r"\bAwaitable\[(\w+)\]", r"\1"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncGenerator\[(.+), None\]", r"Generator[\1, None, None]"),
    (r"\bAsync(Mailbox|Message|CueClient)\b", r"\1"),
    (r"\basync (with|for|def)\b", r"\1"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\baclose\b", "close"),
    (r"\bAsync mailbox\b", "Mailbox"),
    (r"\basync mailbox\b", "mailbox"),
    # `AsyncMailbox.open` answers an awaitable that is also an async context manager.
    (r"\bOpening\b", "Mailbox"),
]


def as_sync(text: str | None) -> str:
    """`text` with the async spellings mapped to the sync ones."""
    out = inspect.cleandoc(text or "")
    for pattern, repl in ASYNC_TO_SYNC:
        out = re.sub(pattern, repl, out)
    return out


def doc(func: Callable[..., Any]) -> str:
    """A docstring in sync spelling, without its `Sync:` / `Async:` paragraphs.

    Those paragraphs are where a twin says what holds for it alone (threads,
    awaitables); everything else must be the same text.
    """
    paragraphs = as_sync(func.__doc__).split("\n\n")
    return "\n\n".join(p for p in paragraphs if not p.startswith(("Sync:", "Async:")))


def public(cls: type) -> dict[str, Any]:
    """A class's own public members (and its context-manager dunders), by sync name."""
    found = {}
    for name, member in vars(cls).items():
        if name.startswith("_") and name not in (
            "__enter__",
            "__exit__",
            "__aenter__",
            "__aexit__",
        ):
            continue
        found[as_sync(name)] = member
    return found


def describe(func: Callable[..., Any]) -> list[str]:
    """One line per parameter (name, kind, default, annotation), then the return annotation."""
    sig = inspect.signature(func)
    lines = [
        f"{p.name} {p.kind.name} default={p.default!r} annotation={as_sync(str(p.annotation))}"
        for p in sig.parameters.values()
    ]
    return [*lines, f"-> {as_sync(str(sig.return_annotation))}"]


def underlying(member: Any) -> Callable[..., Any]:
    """The function behind a method, classmethod or property."""
    if isinstance(member, (classmethod, staticmethod)):
        return member.__func__
    if isinstance(member, property):
        assert member.fget is not None
        return member.fget
    return member


def overloads(func: Callable[..., Any]) -> list[Callable[..., Any]]:
    """The `@overload` signatures of `func` (Python 3.10 keeps none to read: 3.11+ checks them)."""
    if sys.version_info >= (3, 11):
        return typing.get_overloads(func)
    return []


def pairs() -> list[Any]:
    return [
        pytest.param(name, sync_cls, async_cls, id=f"{sync_cls.__name__}.{name}")
        for sync_cls, async_cls in PAIRS
        for name in sorted(public(sync_cls).keys() | public(async_cls).keys())
    ]


def test_every_mixin_has_a_twin_and_is_compared() -> None:
    """A mixin added to one mailbox only, or misnamed, fails here rather than going unchecked."""
    sync_mixins = own_mixins(Mailbox, AsyncMailbox)
    async_mixins = own_mixins(AsyncMailbox, Mailbox)
    assert len(sync_mixins) >= 5  # send, settle, admin, conversations, durable
    assert sorted("Async" + base.__name__ for base in sync_mixins) == sorted(
        base.__name__ for base in async_mixins
    )
    assert all(async_cls is not object for _, async_cls in PAIRS)


@pytest.mark.parametrize(("sync_cls", "async_cls"), PAIRS, ids=lambda c: c.__name__)
def test_the_twins_have_the_same_public_names(sync_cls: type, async_cls: type) -> None:
    assert sorted(public(sync_cls)) == sorted(public(async_cls))


@pytest.mark.parametrize(("name", "sync_cls", "async_cls"), pairs())
def test_each_public_member_matches_its_twin(name: str, sync_cls: type, async_cls: type) -> None:
    sync_member = public(sync_cls).get(name)
    async_member = public(async_cls).get(name)
    assert sync_member is not None and async_member is not None, f"{name} has no twin"
    assert type(sync_member) is type(async_member), f"{name}: {sync_member} vs {async_member}"
    sync_func, async_func = underlying(sync_member), underlying(async_member)
    where = f"{sync_cls.__name__}.{name} vs {async_cls.__name__}"
    assert describe(sync_func) == describe(async_func), where
    assert doc(sync_func) == doc(async_func), where
    sync_overloads = overloads(sync_func)
    async_overloads = overloads(async_func)
    assert len(sync_overloads) == len(async_overloads), where
    for sync_one, async_one in zip(sync_overloads, async_overloads, strict=True):
        assert describe(sync_one) == describe(async_one), f"{where} (overload)"


def test_a_drifted_twin_is_caught() -> None:
    """The comparison itself: a changed default, annotation or docstring shows up."""

    class Sync:
        def f(self, x: int = 1) -> str:
            """Doc of `Mailbox`."""
            return str(x)

    class Async:
        async def f(self, x: int = 2) -> str:
            """Doc of `AsyncMailbox`."""
            return str(x)

    class AsyncRetyped:
        async def f(self, x: str = "1") -> str:
            """Doc of the other mailbox."""
            return x

    assert doc(Sync.f) == doc(Async.f)
    assert describe(Sync.f) != describe(Async.f)  # the default differs
    assert describe(Sync.f) != describe(AsyncRetyped.f)
    assert doc(Sync.f) != doc(AsyncRetyped.f)
