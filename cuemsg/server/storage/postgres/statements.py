"""SQL fragments and codecs the PostgreSQL statements share: the claim
condition and update, the relaxed-commit CTE, and the cue document codec.
"""

from __future__ import annotations

import msgspec

from cuemsg.server.storage.base import (
    EXECUTION_COLUMNS,
    claimable_condition,
    cue_from_doc,
)

__all__ = ["cue_from_doc"]  # shared with SQLite, imported from here by this backend

EXEC_COLS = EXECUTION_COLUMNS
CLAIMABLE_WHERE = claimable_condition("%s")
CLAIM_SET = (
    "status = 'delivering', attempts = e.attempts + 1, claimed_by_worker = %s, "
    "claimed_at = %s, lease_expires_at = %s, updated_at = %s, claimed_seq = cuemsg_next_event()"
)
# A lease ran out: stamp it for the feed, and keep who lost it and when.
LOST_SET = (
    "lost_seq = cuemsg_next_event(), lost_worker = e.claimed_by_worker, lost_at = %s, "
    "lost_claimed_at = e.claimed_at, lost_claim_seq = e.claimed_seq, lost_attempt = e.attempts"
)
# Claims, heartbeats and the sweep commit without waiting for the WAL flush
# (`synchronous_commit = off` for that one statement's transaction). Safe by
# design: if the database crashes before the flush, a claim or a lease extension
# is lost and the message is simply delivered again (at-least-once), and the
# sweep redoes what it lost on its next pass. Fires and outcomes always wait for
# the flush: once acknowledged, they survive a crash.
RELAXED = "relaxed AS (SELECT set_config('synchronous_commit', 'off', true) AS v)"
IS_RELAXED = "(SELECT v FROM relaxed) = 'off'"  # referencing the CTE makes it run

encode_json = msgspec.json.Encoder().encode


def claim_next_statement(where: str, *, relaxed: bool) -> str:
    """Claim the oldest claimable rows matching `where` (its arguments, then the
    limit, then those of `CLAIM_SET`). The CTE (always materialised: it locks)
    runs once; SKIP LOCKED lets concurrent claimers on any replica take
    different rows without waiting. `relaxed`: a claim on its own commits
    without waiting for the flush; one that carries outcomes must wait."""
    head, check = (f"WITH {RELAXED}, ", f" AND {IS_RELAXED}") if relaxed else ("WITH ", "")
    return (
        f"{head}picked AS (SELECT seq FROM cuemsg_executions WHERE {where} "
        "ORDER BY scheduled_for, seq LIMIT %s FOR UPDATE SKIP LOCKED) "
        f"UPDATE cuemsg_executions e SET {CLAIM_SET} FROM picked "
        f"WHERE e.seq = picked.seq{check} RETURNING {EXEC_COLS}, e.seq"
    )
