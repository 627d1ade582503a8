"""API keys and ids: the key hash stored in place of a key, new keys and ids,
and the development key a database makes on first start."""

from __future__ import annotations

import hashlib
import secrets
import time

from cuemsg.server.storage.base import Storage

_CUE_ID_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


def hash_key(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()


def new_api_key() -> str:
    return "cue_sk_" + secrets.token_hex(16)


def new_cue_id() -> str:
    return "cue_" + "".join(secrets.choice(_CUE_ID_ALPHABET) for _ in range(12))


def new_tenant_id() -> str:
    return "ten_" + secrets.token_hex(8)


async def ensure_dev_key(storage: Storage) -> str:
    """The development key of this database, made on first start (kept in plain
    text in the database's meta table: for local development only)."""
    key = await storage.get_meta("dev_api_key")
    if key is None:
        key = new_api_key()
        await storage.create_tenant(new_tenant_id(), "dev@localhost", hash_key(key), time.time())
        await storage.set_meta("dev_api_key", key)
    return key
