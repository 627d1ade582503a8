"""Webhook signatures as CueAPI makes them, for people writing receivers.

A webhook delivery carries `X-CueAPI-Timestamp` (UNIX seconds) and
`X-CueAPI-Signature: v1=<hex>`, the HMAC-SHA256, keyed by the tenant's webhook
secret (`GET /v1/auth/webhook-secret`), of `"{timestamp}.{body}"` where the
body is the JSON document with sorted keys (`json.dumps(body, sort_keys=True)`).

```python
from cuemsg.webhook import verify

def receive(request):                      # any web framework
    if not verify(request.body, secret=SECRET,
                  signature=request.headers["X-CueAPI-Signature"],
                  timestamp=request.headers["X-CueAPI-Timestamp"]):
        return 401
```
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

__all__ = ["DEFAULT_TOLERANCE", "canonical_body", "sign", "verify"]

#: Seconds a signature stays valid either side of its timestamp (replay guard).
DEFAULT_TOLERANCE = 300


def canonical_body(body: bytes | str | Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: the JSON document with sorted keys, in
    `json.dumps`'s default spacing (what CueAPI sends); a body that is not JSON
    is taken as it is."""
    if isinstance(body, Mapping):
        return json.dumps(body, sort_keys=True).encode()
    try:
        return json.dumps(json.loads(body), sort_keys=True).encode()
    except ValueError:  # not JSON (or not UTF-8): sign the bytes themselves
        return body.encode() if isinstance(body, str) else body


def sign(secret: str, timestamp: int | str, body: bytes | str | Mapping[str, Any]) -> str:
    """The `X-CueAPI-Signature` value of `body` sent at `timestamp`: `v1=<hex>`."""
    message = f"{timestamp}.".encode() + canonical_body(body)
    return "v1=" + hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def verify(
    body: bytes | str | Mapping[str, Any],
    *,
    signature: str,
    timestamp: str | int,
    secret: str,
    tolerance: float = DEFAULT_TOLERANCE,
    now: float | None = None,
) -> bool:
    """Whether `signature` is the tenant's signature of `body` at `timestamp`,
    and `timestamp` is within `tolerance` seconds of `now` (default: the clock).

    Args:
        body: the request body as received (bytes or text), or its parsed JSON.
        signature: the `X-CueAPI-Signature` header.
        timestamp: the `X-CueAPI-Timestamp` header.
        secret: the webhook secret (`GET /v1/auth/webhook-secret`).
        tolerance: seconds of clock difference accepted (0 = any age).
        now: the time to check against, for tests.
    """
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    current = time.time() if now is None else now
    if tolerance and abs(current - sent) > tolerance:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature.strip())
