"""Cancelled gather requests a responder may meet again: the marker and its check.

`gather` withdraws a request it no longer needs by claiming it itself. One
a responder already held cannot be withdrawn; if that responder dies, the
request goes back to the queue and another would handle it after all. So
`gather` also fires a *marker* on the requester's cue (task
`<reply task>.cancelled.<gather id>`, expiring with the gather) listing
those requests, and a receiver that claims a gather request again (a
redelivery: a first claim cannot race a withdrawal, one of the two claims
wins) looks for the marker and skips the request, recording why.
"""

from __future__ import annotations

from cuemsg.cueapi.models import Claimable
from cuemsg.mailbox._ops import Flow, ListClaimable

#: Key of a marker's body listing the correlation ids of the cancelled requests.
CANCELLED_KEY = "cancelled"


def marker_task(reply_task: str, gather_id: str) -> str:
    """The task of the cancellation marker of one gather."""
    return f"{reply_task}.cancelled.{gather_id}"


def is_cancelled(reply_task: str, gather_id: str, correlation_id: str) -> Flow[bool]:
    """True when the gather's marker lists `correlation_id` (one listing request)."""
    listing: list[Claimable] = yield ListClaimable(marker_task(reply_task, gather_id))
    for item in listing:
        body = item.payload.get("message")
        if isinstance(body, dict) and correlation_id in (body.get(CANCELLED_KEY) or ()):
            return True
    return False
