"""Server settings, their documented defaults, and where they come from.

Explicit arguments win; `ServerSettings.from_env()` reads `CUEMSG_*` variables
(the CLI uses it); otherwise the `DEFAULT_*` values below apply.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

#: Lease a claim gets, and each heartbeat renews. Shorter than the hosted
#: service's 900 s so a crashed receiver's message comes back within a
#: minute; a Mailbox heartbeats every third of it while a handler runs.
DEFAULT_LEASE_SECONDS = 60.0
#: Pending executions never claimed this long after they came due become
#: `missed`. 0 = never: a mailbox whose agent is offline keeps its mail.
#: (The hosted service uses 900 s.)
DEFAULT_UNCLAIMED_TIMEOUT = 0.0
#: The longest `wait` a claim may ask for (docs/cueapi.md: 0..30).
MAX_CLAIM_WAIT = 30.0
#: Request bodies above this size get 413 `payload_too_large`.
DEFAULT_MAX_BODY_BYTES = 1024 * 1024
#: How often leases, the unclaimed timeout and scheduled fires are checked.
DEFAULT_SWEEP_INTERVAL = 0.5
#: Requests per minute per key; 0 = no limit (the hosted service allows 60).
DEFAULT_RATE_LIMIT = 0

EXTENSIONS = (
    "claim.task",
    "claim.wait",
    "claim.payload",
    "claim.many",
    "fire.batch",
    "outcome.batch",
    "workers.list",
    "events.stream",
    "executions.redrive",
)


@dataclasses.dataclass(frozen=True)
class ServerSettings:
    """Everything the embedded server can be told.

    Attributes:
        db: `:memory:`, a SQLite file path (or `sqlite:///path`), or a
            `postgresql://` URL.
        extensions: serve the extensions in docs/cueapi.md; False makes a plain
            CueAPI (no `extensions` in /v1/info, extension fields rejected).
        lease_seconds: lease of a claim and of each heartbeat.
        unclaimed_timeout: seconds before a never-claimed execution is `missed`.
        max_body_bytes: larger request bodies are refused with 413.
        sweep_interval: seconds between checks of leases and due executions.
        rate_limit: requests per minute per API key (sliding window); 0 = off.
        sqlite_synchronous: `NORMAL` (a killed process loses nothing) or
            `FULL` (survives a power cut too, slower).
        access_log: log every request (uvicorn's access log).
        metrics: serve `GET /metrics` (Prometheus). `cuemsg serve` turns it off
            when bound beyond loopback, unless `--metrics`.
    """

    db: str = "cuemsg.db"
    extensions: bool = True
    lease_seconds: float = DEFAULT_LEASE_SECONDS
    unclaimed_timeout: float = DEFAULT_UNCLAIMED_TIMEOUT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    sweep_interval: float = DEFAULT_SWEEP_INTERVAL
    rate_limit: int = DEFAULT_RATE_LIMIT
    sqlite_synchronous: str = "NORMAL"
    access_log: bool = False
    metrics: bool = True

    def __post_init__(self) -> None:
        if self.lease_seconds <= 0:
            raise ValueError(f"lease_seconds must be > 0, not {self.lease_seconds}")
        if self.unclaimed_timeout < 0:
            raise ValueError(f"unclaimed_timeout must be >= 0, not {self.unclaimed_timeout}")
        if self.sweep_interval <= 0:
            raise ValueError(f"sweep_interval must be > 0, not {self.sweep_interval}")
        if self.max_body_bytes <= 0:
            raise ValueError(f"max_body_bytes must be > 0, not {self.max_body_bytes}")
        if self.rate_limit < 0:
            raise ValueError(f"rate_limit must be >= 0, not {self.rate_limit}")

    @property
    def extension_names(self) -> tuple[str, ...]:
        return EXTENSIONS if self.extensions else ()

    def replace(self, **changes: Any) -> ServerSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Settings from the environment, then `overrides` (None values ignored).

        Reads `CUEMSG_DB`, `CUEMSG_LEASE_SECONDS`, `CUEMSG_UNCLAIMED_TIMEOUT`,
        `CUEMSG_RATE_LIMIT`, `CUEMSG_SWEEP_INTERVAL`, `CUEMSG_SQLITE_SYNCHRONOUS`
        and `CUEMSG_EXTENSIONS` (0/1); a value that does not parse raises ValueError.
        """
        values: dict[str, Any] = {}
        env = os.environ
        casts: dict[str, Any] = {
            "db": str,
            "lease_seconds": float,
            "unclaimed_timeout": float,
            "rate_limit": int,
            "sweep_interval": float,
            "sqlite_synchronous": str,
        }
        for name, cast in casts.items():
            raw = env.get(f"CUEMSG_{name.upper()}")
            if raw:
                try:
                    values[name] = cast(raw)
                except ValueError as exc:
                    raise ValueError(f"CUEMSG_{name.upper()}={raw!r}: {exc}") from None
        if "CUEMSG_EXTENSIONS" in env:
            values["extensions"] = env["CUEMSG_EXTENSIONS"].strip().lower() not in (
                "0",
                "false",
                "no",
                "off",
            )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
