"""Execution ids: version 7 UUIDs, ordered by the millisecond they were made in."""

from __future__ import annotations

import time
import uuid

from cuemsg.server.storage.base import new_execution_id, new_execution_ids


def test_ids_are_version_7_uuids_carrying_the_time() -> None:
    before = time.time_ns() // 1_000_000
    ids = new_execution_ids(50)
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == 50
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text  # canonical lowercase 8-4-4-4-12
        assert parsed.version == 7
        assert parsed.variant == uuid.RFC_4122
        assert before <= parsed.int >> 80 <= after


def test_ids_of_later_milliseconds_sort_after() -> None:
    first = new_execution_id()
    time.sleep(0.002)
    second = new_execution_ids(3)
    assert all(first < later for later in second)
