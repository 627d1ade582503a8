"""Ed25519 keys for signed senders: making, loading, signing, verifying.

A mailbox opened with `signing_key=` signs every envelope it sends and
publishes its public key on its mailbox cue; a mailbox opened with
`require_signed=True` rejects a message whose signature is missing or does
not match the key its claimed sender published (docs/reliability.md,
"Signatures"). This module owns only the keys and the bytes; what is signed
is `cuemsg.envelope.signed_content`.

Keys are text: a private key is `ed25519:` and the base64 of its 32-byte
seed (keep it secret: in a file only its owner reads, or an environment
variable), a public key `ed25519:` and the base64 of its 32 bytes.

```python
from cuemsg.signing import SigningKey, generate_key

key_text = generate_key()                   # store it: a file or CUEMSG_SIGNING_KEY
key = SigningKey.from_env()                 # or SigningKey.from_file(path), from_text(...)
```

Needs the `cryptography` package: `pip install 'cuemsg[signing]'`.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

__all__ = ["DEFAULT_ENV", "PREFIX", "SigningKey", "generate_key", "verify"]

#: The environment variable `SigningKey.from_env()` reads by default.
DEFAULT_ENV = "CUEMSG_SIGNING_KEY"
#: Every key's text starts with this (the algorithm), so other kinds can follow.
PREFIX = "ed25519:"


def _ed25519() -> type[Ed25519PrivateKey]:
    try:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    except ImportError as exc:  # cryptography is an optional extra
        raise ImportError(
            "signed senders need the cryptography package: pip install 'cuemsg[signing]'"
        ) from exc
    return Ed25519PrivateKey


def _raw(text: str, what: str) -> bytes:
    """The 32 bytes of a key's text, or ValueError naming what is wrong."""
    text = text.strip()
    if not text.startswith(PREFIX):
        raise ValueError(f"{what} must start with {PREFIX!r} (made by cuemsg.signing.generate_key)")
    try:
        raw = base64.b64decode(text[len(PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64 after {PREFIX!r}") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must hold 32 bytes, not {len(raw)}")
    return raw


def _text(raw: bytes) -> str:
    return PREFIX + base64.b64encode(raw).decode()


def generate_key() -> str:
    """A new private key, as text (keep it secret; `SigningKey.from_text` reads it)."""
    key = _ed25519().generate()
    from cryptography.hazmat.primitives import serialization

    return _text(
        key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )


class SigningKey:
    """A mailbox's private key: signs envelopes; `public_key` is what it publishes."""

    def __init__(self, text: str) -> None:
        self._key = _ed25519().from_private_bytes(_raw(text, "a signing key"))
        from cryptography.hazmat.primitives import serialization

        self.public_key = _text(
            self._key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def from_text(cls, text: str) -> SigningKey:
        """The key `generate_key()` made; ValueError if `text` is not one."""
        return cls(text)

    @classmethod
    def from_file(cls, path: str | Path) -> SigningKey:
        """The key in the file at `path` (its text, surrounding blanks ignored)."""
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ValueError(f"cannot read the signing key file {path}: {exc.strerror}") from None
        try:
            return cls(text)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    @classmethod
    def from_env(cls, name: str = DEFAULT_ENV) -> SigningKey:
        """The key in the environment variable `name` (default `CUEMSG_SIGNING_KEY`)."""
        text = os.environ.get(name)
        if not text:
            raise ValueError(f"the environment variable {name} holds no signing key")
        try:
            return cls(text)
        except ValueError as exc:
            raise ValueError(f"{name}: {exc}") from None

    @classmethod
    def coerce(cls, value: SigningKey | str | Path) -> SigningKey:
        """A `SigningKey` as given, from its text, or from a file (a `Path`)."""
        if isinstance(value, SigningKey):
            return value
        if isinstance(value, Path):
            return cls.from_file(value)
        return cls(value)

    def sign(self, data: bytes) -> str:
        """The signature of `data`, as base64."""
        return base64.b64encode(self._key.sign(data)).decode()

    def __repr__(self) -> str:  # never the secret
        return f"SigningKey(public_key={self.public_key!r})"


def verify(public_key: str, data: bytes, signature: str) -> bool:
    """True when `signature` (base64) is the signature of `data` by `public_key`'s owner.

    A malformed key or signature is simply not a valid signature (False).
    """
    _ed25519()  # a clear ImportError when cryptography is missing
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = Ed25519PublicKey.from_public_bytes(_raw(public_key, "a public key"))
        key.verify(base64.b64decode(signature, validate=True), data)
    except (ValueError, binascii.Error, InvalidSignature):
        return False
    return True
