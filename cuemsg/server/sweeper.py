"""The sweeper: a background task that runs `Storage.sweep` every interval
(expired leases requeued, long-unclaimed executions missed, due work announced)
and keeps going when a pass fails."""

from __future__ import annotations

import asyncio
import logging

from cuemsg.server.state import Server

log = logging.getLogger("cuemsg.server")


async def sweep_forever(server: Server) -> None:
    since = server.clock()
    interval = server.settings.sweep_interval
    failures = 0
    while True:
        await asyncio.sleep(interval)
        now = server.clock()
        try:
            await server.storage.sweep(
                now, since=since, unclaimed_timeout=server.settings.unclaimed_timeout
            )
            since = now
            failures = 0
            server.feed.bump()  # leases lost, executions missed: streams look
        except Exception:  # keep sweeping: a failed pass is retried next interval
            # The first failure with its traceback, then a line a minute, not one per pass.
            if failures == 0:
                log.exception("sweep failed; retrying every %.1fs", interval)
            elif failures % max(1, int(60 / interval)) == 0:
                log.warning("sweep still failing (%d passes)", failures + 1)
            failures += 1
