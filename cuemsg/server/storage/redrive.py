"""Redrive: what every backend does alike when a dead letter is sent again.

A dead letter is an execution that ended `failed` (rejected, or past the
claim cap). Redriving it fires a new execution of the same cue with the same
message: the same payload, whose envelope says which execution it re-sends
(`cuemsg.redrive_of`, outside the sender's signature) and counts one more
attempt. The
dead execution gets the new one's id (`redriven_to`), and the new one the
dead one's (`redrive_of`), in the transaction that fires it, so the history
reads both ways and a second redrive finds the first and fires nothing.
"""

from __future__ import annotations

from typing import Any

from cuemsg.envelope import as_redrive
from cuemsg.server.storage.base import CueRow, ExecutionRow, NewFire, new_execution, not_dead_letter


def redrive_payload(payload: dict[str, Any], dead_id: str) -> dict[str, Any]:
    """The payload of the redrive of `dead_id`: the same message, its envelope
    linking the dead execution (`cuemsg.redrive_of`). A payload without a
    cuemsg envelope (fired by another program) is sent unchanged: the link is
    then on the records only."""
    return as_redrive(payload, dead_id)


def check_redrivable(dead: ExecutionRow) -> None:
    """409 `not_dead_letter` unless `dead` is `failed`."""
    if dead.status != "failed":
        raise not_dead_letter(dead.id, dead.status)


def redrive_execution(
    cue: CueRow, dead: ExecutionRow, execution_id: str, now: float
) -> ExecutionRow:
    """The new, pending execution that re-sends `dead` (not stored yet)."""
    fire = NewFire(
        cue_id=cue.id,
        payload_override=redrive_payload(dead.payload, dead.id),
        merge_strategy="replace",  # the dead one's effective payload, as it was
        scheduled_for=now,
    )
    execution = new_execution(dead.tenant_id, cue, fire, execution_id, now)
    execution.redrive_of = dead.id
    return execution
