"""Wake-ups between replicas: the LISTEN/NOTIFY channel of a schema and the
NOTIFY payloads (which replica, which tenant and task, how many), each kept
under PostgreSQL's 8000-byte limit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import msgspec

#: NOTIFY payloads must stay under 8000 bytes; longer tasks wake the whole tenant.
_NOTIFY_MAX = 7000
_LONG_TASK = 1000


encode_json = msgspec.json.Encoder().encode


class _Wake(msgspec.Struct, array_like=True):
    tenant: str
    task: str | None
    n: int = 1  # how many executions: wakes that many waiters


class _Relay(msgspec.Struct):
    """A NOTIFY payload: which replica sent it, and the (tenant, task) pairs to wake."""

    r: str
    w: list[_Wake]


decode_relay = msgspec.json.Decoder(_Relay).decode


def channel_name(schema: str) -> str:
    """The LISTEN/NOTIFY channel of the cuemsg tables in `schema` (a valid identifier)."""
    if re.fullmatch(r"[a-z0-9_]{1,48}", schema):
        return f"cuemsg_{schema}"
    return "cuemsg_" + hashlib.sha256(schema.encode()).hexdigest()[:24]


def relay_payloads(replica: str, pairs: Iterable[tuple[str, str | None, int]]) -> list[str]:
    """NOTIFY payloads for these wake-ups, each under PostgreSQL's 8000-byte limit."""
    payloads: list[str] = []
    batch: list[_Wake] = []
    size = 0
    for tenant, task, count in pairs:
        if task is not None and len(task) > _LONG_TASK:
            task, count = None, 1 << 30  # too long to carry: wake every waiter of the tenant
        item = _Wake(tenant, task, count)
        item_size = len(encode_json(item)) + 1
        if batch and size + item_size > _NOTIFY_MAX:
            payloads.append(encode_json(_Relay(replica, batch)).decode())
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        payloads.append(encode_json(_Relay(replica, batch)).decode())
    return payloads
