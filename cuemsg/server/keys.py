"""API keys and ids: the key hash stored in place of a key, new keys and ids,
and the development key a database makes on first start (stored hashed, like
every key: it is shown when made, never again)."""

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


#: Meta keys: the development tenant's id, and the plain-text key older versions kept.
_DEV_TENANT = "dev_tenant_id"
_OLD_PLAIN_KEY = "dev_api_key"
_FORGOTTEN = ""


async def _dev_tenant(storage: Storage) -> str | None:
    tenant = await storage.get_meta(_DEV_TENANT)
    return tenant or None


async def ensure_dev_key(storage: Storage) -> str | None:
    """Make the database's development tenant and key on first start.

    Returns the key when it was made now, else None: only its hash is stored,
    so it can be shown once (`cuemsg keys create` makes another). A database
    from an older version that kept the key in plain text has that copy
    erased, and the key is returned this one last time.
    """
    if await _dev_tenant(storage) is not None:
        return None
    plain = await storage.get_meta(_OLD_PLAIN_KEY)
    if plain:
        tenant = await storage.tenant_for_key(hash_key(plain))
        if tenant is not None:
            await storage.set_meta(_DEV_TENANT, tenant)
            await storage.set_meta(_OLD_PLAIN_KEY, _FORGOTTEN)
            return plain
    key = new_api_key()
    tenant = new_tenant_id()
    await storage.create_tenant(tenant, "dev@localhost", hash_key(key), time.time())
    await storage.set_meta(_DEV_TENANT, tenant)
    return key


async def create_dev_key(storage: Storage) -> str:
    """A new key for the development tenant (made first if missing); earlier
    keys keep working. Returns the key: it is stored hashed, shown once."""
    made = await ensure_dev_key(storage)
    if made is not None:
        return made
    tenant = await _dev_tenant(storage)
    assert tenant is not None  # ensure_dev_key just made sure
    key = new_api_key()
    await storage.add_api_key(tenant, hash_key(key), time.time())
    return key
