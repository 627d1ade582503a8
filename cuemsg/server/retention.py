"""Bounded history: the background purge of settled executions.

Every `retention_interval` seconds, executions that settled `success` more
than `retention` ago go, and so do replies nobody collected in that time
(their requester is gone: no one will ever claim them); dead letters
(`failed`, `missed`) stay `dead_letter_retention`. A `pending` message or a
`delivering` execution is never purged. `0` keeps that part for ever.
Idempotency records older than 24 hours go in every sweep (`sweeper.py`).
"""

from __future__ import annotations

import asyncio
import logging

from cuemsg.server.state import Server

log = logging.getLogger("cuemsg.server")


async def purge_once(server: Server, now: float) -> int:
    """One purge as of `now` (UNIX seconds); returns how many executions went."""
    settings = server.settings
    settled = now - settings.retention if settings.retention else None
    dead = now - settings.dead_letter_retention if settings.dead_letter_retention else None
    if settled is None and dead is None:
        return 0
    gone = await server.storage.purge(settled_before=settled, dead_before=dead)
    if gone:
        server.quotas.forget()  # stored bytes and counts changed under the cache
        log.info("retention: purged %d executions", gone)
    return gone


async def purge_forever(server: Server) -> None:
    interval = server.settings.retention_interval
    while True:
        try:
            await purge_once(server, server.clock())
        except Exception:  # keep going: a failed purge is retried next interval
            log.exception("retention purge failed; retrying in %.0fs", interval)
        await asyncio.sleep(interval)
