"""Server settings, their documented defaults, and where they come from.

Explicit arguments win; `ServerSettings.from_env()` reads `CUEMSG_*` variables
(the CLI uses it); otherwise the `DEFAULT_*` values below apply.
"""

from __future__ import annotations

import dataclasses
import ipaddress
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
#: Requests per minute per tenant; 0 = no limit (the hosted service allows 60).
DEFAULT_RATE_LIMIT = 0
#: A listing page stops once the payloads on it pass this many bytes (at
#: least one item is always answered), so no answer grows past a few MiB.
DEFAULT_MAX_PAGE_BYTES = 4 * 1024 * 1024
#: Per-tenant quota: executions not yet settled (pending, retry_ready,
#: delivering). A fire past it answers 429 `quota_exceeded`. 0 = no quota.
DEFAULT_QUOTA_PENDING = 100_000
#: Per-tenant quota: bytes of execution payloads stored. A fire past it
#: answers 507 `quota_exceeded`. 0 = no quota.
DEFAULT_QUOTA_STORED_BYTES = 1024**3
#: `POST /v1/auth/register` per client address a minute, when registration is
#: open (loopback clients are not counted). 0 = no limit.
DEFAULT_REGISTRATION_RATE = 10
#: Settled executions are purged this long after they settled (7 days); 0 keeps all.
DEFAULT_RETENTION = 7 * 86400.0
#: Dead letters (`failed`, `missed`) are kept longer (30 days); 0 keeps them.
DEFAULT_DEAD_LETTER_RETENTION = 30 * 86400.0
#: How often the retention purge runs.
DEFAULT_RETENTION_INTERVAL = 60.0
#: Host names a loopback-bound server answers to (DNS rebinding guard).
LOOPBACK_NAMES = frozenset(("127.0.0.1", "localhost", "::1", "[::1]"))

#: Seconds a webhook delivery may take before it counts as failed.
DEFAULT_WEBHOOK_TIMEOUT = 10.0
#: Webhook deliveries in flight at once (a bounded pool; tenants share it fairly).
DEFAULT_WEBHOOK_POOL = 16

EXTENSIONS = (
    "claim.task",
    "claim.wait",
    "claim.payload",
    "claim.many",
    "claim.settle",
    "fire.batch",
    "outcome.batch",
    "outcome.reply",
    "workers.list",
    "events.stream",
    "executions.redrive",
    "executions.release",
)


_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 7 * 86400.0}


def parse_duration(text: str) -> float:
    """`90`, `90s`, `15m`, `12h`, `7d` or `2w` as seconds; ValueError otherwise."""
    raw = text.strip().lower()
    unit = _UNITS.get(raw[-1:])
    number = raw[:-1] if unit is not None else raw
    try:
        value = float(number)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (a number with s, m, h, d or w, e.g. 7d)"
        ) from None
    if value < 0 or value != value or value == float("inf"):
        raise ValueError(f"{text!r} is not a duration (must be a finite number >= 0)")
    return value * (unit or 1.0)


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
        rate_limit: requests per minute per tenant (sliding window); 0 = off.
        max_page_bytes: payload bytes after which a listing page ends early.
        quota_pending: unsettled executions a tenant may have; 0 = no quota.
        quota_stored_bytes: payload bytes a tenant may store; 0 = no quota.
        registration: `open` or `closed`; None: open when `host` is loopback
            (or unknown, as for an app built in-process), closed otherwise.
        registration_rate: registrations per client address a minute; 0 = off.
        host: the interface the server is bound to. When it is a loopback
            address, requests whose `Host` names anything else get 421, and
            webhooks may call loopback addresses (the receiver is local).
        retention: seconds settled executions are kept; 0 keeps everything.
        dead_letter_retention: seconds `failed` and `missed` ones are kept; 0 keeps them.
        retention_interval: seconds between purges.
        sqlite_synchronous: `NORMAL` (a killed process loses nothing) or
            `FULL` (survives a power cut too, slower).
        access_log: log every request (uvicorn's access log).
        webhook_allow: CIDR ranges webhooks may reach even though they are
            private, link-local or loopback (e.g. `10.0.0.0/8`).
        webhook_backoff_scale: multiplies a cue's `retry.backoff_minutes`
            (tests use a small value; 1 = minutes as given).
        webhook_timeout: seconds one webhook delivery may take.
        webhook_pool: webhook deliveries in flight at once.
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
    max_page_bytes: int = DEFAULT_MAX_PAGE_BYTES
    quota_pending: int = DEFAULT_QUOTA_PENDING
    quota_stored_bytes: int = DEFAULT_QUOTA_STORED_BYTES
    registration: str | None = None
    registration_rate: int = DEFAULT_REGISTRATION_RATE
    host: str | None = None
    retention: float = DEFAULT_RETENTION
    dead_letter_retention: float = DEFAULT_DEAD_LETTER_RETENTION
    retention_interval: float = DEFAULT_RETENTION_INTERVAL
    webhook_allow: tuple[str, ...] = ()
    webhook_backoff_scale: float = 1.0
    webhook_timeout: float = DEFAULT_WEBHOOK_TIMEOUT
    webhook_pool: int = DEFAULT_WEBHOOK_POOL
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
        for name in (
            "rate_limit",
            "quota_pending",
            "quota_stored_bytes",
            "registration_rate",
            "retention",
            "dead_letter_retention",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, not {getattr(self, name)}")
        if self.max_page_bytes <= 0:
            raise ValueError(f"max_page_bytes must be > 0, not {self.max_page_bytes}")
        if self.retention_interval <= 0:
            raise ValueError(f"retention_interval must be > 0, not {self.retention_interval}")
        if self.registration not in (None, "open", "closed"):
            raise ValueError(f"registration must be 'open' or 'closed', not {self.registration!r}")
        if self.webhook_backoff_scale < 0:
            raise ValueError(
                f"webhook_backoff_scale must be >= 0, not {self.webhook_backoff_scale}"
            )
        if self.webhook_timeout <= 0:
            raise ValueError(f"webhook_timeout must be > 0, not {self.webhook_timeout}")
        if self.webhook_pool < 1:
            raise ValueError(f"webhook_pool must be >= 1, not {self.webhook_pool}")
        for cidr in self.webhook_allow:
            try:
                ipaddress.ip_network(cidr, strict=False)
            except ValueError:
                raise ValueError(
                    f"webhook_allow: {cidr!r} is not a CIDR range (e.g. 10.0.0.0/8)"
                ) from None

    @property
    def loopback(self) -> bool:
        """Bound to loopback only (or not bound at all: an in-process app)."""
        return self.host is None or self.host in LOOPBACK_NAMES

    @property
    def registration_open(self) -> bool:
        if self.registration is None:
            return self.loopback
        return self.registration == "open"

    @property
    def extension_names(self) -> tuple[str, ...]:
        return EXTENSIONS if self.extensions else ()

    def replace(self, **changes: Any) -> ServerSettings:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_env(cls, **overrides: Any) -> ServerSettings:
        """Settings from the environment, then `overrides` (None values ignored).

        Reads `CUEMSG_DB`, `CUEMSG_LEASE_SECONDS`, `CUEMSG_UNCLAIMED_TIMEOUT`,
        `CUEMSG_RATE_LIMIT`, `CUEMSG_SWEEP_INTERVAL`, `CUEMSG_SQLITE_SYNCHRONOUS`,
        `CUEMSG_QUOTA_PENDING`, `CUEMSG_QUOTA_STORED_BYTES`, `CUEMSG_REGISTRATION`,
        `CUEMSG_RETENTION`, `CUEMSG_DEAD_LETTER_RETENTION`,
        `CUEMSG_RETENTION_INTERVAL` (durations such as `7d`) and
        `CUEMSG_EXTENSIONS` (0/1); a value that does not parse raises ValueError.
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
            "quota_pending": int,
            "quota_stored_bytes": int,
            "registration": str,
            "retention": parse_duration,
            "dead_letter_retention": parse_duration,
            "retention_interval": parse_duration,
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
