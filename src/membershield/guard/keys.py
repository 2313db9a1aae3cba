"""API keys of the guard: random tokens handed out once, stored only as their sha256.

Importable without any web framework, so `membershield keys create` stays light.
"""

from __future__ import annotations

import hashlib
import secrets

from membershield.errors import ConfigError
from membershield.guard.errors import short
from membershield.store import Store


def hash_key(key: str) -> str:
    """The stored form of a key.

    >>> hash_key("msk_x")[:12]
    '6d6eb4113c85'
    """
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(store: Store, name: str, *, admin: bool = False) -> str:
    """Create an API key (a random 32-byte token); only its sha256 is stored, so this is the one time it is seen."""
    # the name is how alerts, limits and the dashboard tell keys apart, and it goes into one-line messages
    if not name.strip() or not name.isprintable() or len(name) > 255:
        raise ConfigError(
            "a key name must be 1 to 255 printable characters on one line (who or what the key is for),"
            f" got {short(name)}"
        )
    token = "msk_" + secrets.token_urlsafe(32)
    store.create_key(name, hash_key(token), admin=admin)
    return token
