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


def new_token() -> str:
    """A fresh API key: a random 32-byte token."""
    return "msk_" + secrets.token_urlsafe(32)


def _check_label(what: str, value: str, meaning: str) -> None:
    if not value.strip() or not value.isprintable() or len(value) > 255:
        raise ConfigError(
            f"a key {what} must be 1 to 255 printable characters on one line ({meaning}), got {short(value)}"
        )


def issue_key(store: Store, name: str, *, admin: bool = False, owner: str | None = None) -> str:
    """Create an API key (a random 32-byte token); only its sha256 is stored, so this is the one time it is seen.

    ``owner`` is who answers for the key (a person or a team, e.g. an e-mail address): incident reports name it."""
    # the name is how alerts, limits and the dashboard tell keys apart, and it goes into one-line messages
    _check_label("name", name, "who or what the key is for")
    if owner is not None:
        _check_label("owner", owner, "who answers for the key")
    token = new_token()
    store.create_key(name, hash_key(token), admin=admin, owner=owner)
    return token
