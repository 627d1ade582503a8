"""Signed senders in the mailbox: signing what it sends, and checking who sent
what it receives (`require_signed=True`).

A sender's public key is read from its mailbox cue (the `cuemsg_signing_key`
key of the cue's payload, which `open` publishes) and kept per sender; a
signature that does not match the kept key makes one fresh read first, so a
sender that changed its key is not refused for good.
"""

from __future__ import annotations

from typing import Any

from cuemsg._exceptions import NotFound
from cuemsg.envelope import (
    SIGNING_KEY_FIELD,
    Envelope,
    signature_of,
    signed_content,
    with_signature,
)
from cuemsg.mailbox._ops import Flow, GetCue
from cuemsg.mailbox._state import CoreState
from cuemsg.signing import verify


class SignatureFlows(CoreState):
    """Signing outgoing envelopes and checking incoming ones."""

    def signed(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`payload` signed with this mailbox's key (as it is, without one)."""
        key = self.config.signing_key
        if key is None:
            return payload
        return with_signature(payload, key.sign(signed_content(payload)))

    def _sender_key(self, sender: str, fresh: bool) -> Flow[str | None]:
        keys = self._sender_keys
        if fresh or sender not in keys:
            try:
                cue = yield GetCue(sender)
            except NotFound:
                keys.pop(sender, None)
                return None
            published = cue.payload.get(SIGNING_KEY_FIELD)
            keys[sender] = published if isinstance(published, str) else None
        return keys[sender]

    def unsigned_reason(self, payload: dict[str, Any], env: Envelope) -> Flow[str | None]:
        """Why the message must not be handled (unsigned or forged), or None when
        `require_signed` is off or its signature is its claimed sender's."""
        if not self.config.require_signed:
            return None
        signature = signature_of(payload)
        sender = env.meta.sender if env.meta is not None else None
        if signature is None or sender is None:
            return "unsigned: this mailbox accepts only signed messages (require_signed)"
        data = signed_content(payload)
        key = yield from self._sender_key(sender, fresh=False)
        if key is not None and verify(key, data, signature):
            return None
        key = yield from self._sender_key(sender, fresh=True)  # it may have a new key
        if key is None:
            return f"unsigned: the claimed sender {sender} publishes no signing key"
        if verify(key, data, signature):
            return None
        return f"forged: the signature does not match the key of the claimed sender {sender}"
