"""Opening a mailbox: get or create its worker cue by name (`open_mailbox`, `find_cue`)."""

from __future__ import annotations

import secrets

from cuemsg._exceptions import Conflict, MailboxError
from cuemsg.cueapi.models import Cue
from cuemsg.envelope import SIGNING_KEY_FIELD
from cuemsg.mailbox._config import (
    DEFAULT_MAX_DELIVERIES,
    MAILBOX_SCHEDULE,
    REPLY_SUFFIX,
    MailboxInfo,
    default_worker_id,
)
from cuemsg.mailbox._ops import CreateCue, Flow, ListCues, UpdateCue

# -- opening ------------------------------------------------------------------------------------


def open_mailbox(
    name: str,
    *,
    task: str | None,
    worker_id: str | None,
    max_deliveries: int = DEFAULT_MAX_DELIVERIES,
    public_key: str | None = None,
) -> Flow[MailboxInfo]:
    """Get or create the mailbox's worker cue, named `name`.

    With `public_key` (a signing mailbox), the key is published on the cue's
    payload (`SIGNING_KEY_FIELD`) where receivers read it.

    Creating first and looking the name up on 409 `cue_name_taken` makes
    two processes that open the same mailbox at once end up on one cue.
    """
    if task is not None and REPLY_SUFFIX in task:
        raise ValueError(f"a mailbox task must not contain {REPLY_SUFFIX!r}: {task!r}")
    wanted = task or name
    cue: Cue | None = None
    for _ in range(3):
        try:
            cue = yield CreateCue(
                name=name,
                payload={"task": wanted},
                schedule=MAILBOX_SCHEDULE,
                retry={"max_attempts": max_deliveries},
                description=f"cuemsg mailbox {name!r} (task {wanted!r})",
            )
            break
        except Conflict as exc:
            if exc.code != "cue_name_taken":
                raise
            cue = yield from find_cue(name)
            if cue is not None:
                break
            # Deleted between our create and our lookup: create again.
    if cue is None:  # pragma: no cover - a cue created and deleted three times in a row
        raise MailboxError(f"could not create or find the mailbox cue {name!r}")
    if cue.transport != "worker":
        raise MailboxError(
            f"the cue {name!r} ({cue.id}) is a {cue.transport} cue, not a mailbox (worker cue)"
        )
    have = cue.payload.get("task")
    if not isinstance(have, str):
        raise MailboxError(f"the cue {name!r} ({cue.id}) has no payload task: not a mailbox")
    if task is not None and have != task:
        raise MailboxError(f"the mailbox {name!r} routes task {have!r}, not {task!r}")
    if cue.status == "active":
        # Never fire on its own: paused (a manual fire works whatever the status).
        cue = yield UpdateCue(cue.id, {"status": "paused"})
    if public_key is not None and cue.payload.get(SIGNING_KEY_FIELD) != public_key:
        cue = yield UpdateCue(cue.id, {"payload": {**cue.payload, SIGNING_KEY_FIELD: public_key}})
    return MailboxInfo(
        name=name,
        address=cue.id,
        task=have,
        # One reply stream per open mailbox, not per name: two processes that open
        # the same mailbox must never claim each other's replies.
        reply_task=f"{have}{REPLY_SUFFIX}.{secrets.token_hex(4)}",
        worker_id=worker_id or default_worker_id(have),
        cue_payload=dict(cue.payload),
    )


def find_cue(name: str, page: int = 200) -> Flow[Cue | None]:
    """The cue named `name`, by listing every page (None if there is none)."""
    offset = 0
    while True:
        listing = yield ListCues(offset=offset, limit=page)
        found: Cue
        for found in listing.cues:
            if found.name == name:
                return found
        offset += len(listing.cues)
        if not listing.cues or offset >= listing.total:
            return None
