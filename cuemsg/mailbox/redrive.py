"""Redrive from a mailbox: the op and flow behind `Mailbox.redrive` and
`AsyncMailbox.redrive` (one flow, driven by both shells)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cuemsg.cueapi.models import Redriven
from cuemsg.mailbox._ops import Flow, Op


@dataclass(frozen=True)
class Redrive(Op):
    execution_id: str

    def call(self, client: Any) -> Any:
        return client.executions.redrive(self.execution_id)


def redrive(execution_id: str) -> Flow[Redriven]:
    """Send the dead letter `execution_id` again (the server does it atomically, once)."""
    done: Redriven = yield Redrive(execution_id)
    return done
