"""Revoking, rotating and listing the guard's API keys (``membershield keys revoke|rotate|list``).

A revoked key, and every key a rotation replaced, is refused by a running guard within a second: the
guard polls the store's key stamp (:meth:`membershield.store.Store.key_stamp`) and forgets the keys it
remembered when it changes. A rotation hands out a new key under the same name; the one it replaces stays
valid for the grace period, so clients can switch over without an outage. Importable without any web
framework.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from membershield.errors import ConfigError
from membershield.guard.keys import hash_key, new_token
from membershield.store import GuardKey, Store

DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhd])\s*$")
SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_GRACE = timedelta(days=365)


def parse_grace(text: str) -> timedelta:
    """A grace period such as ``"1h"``: a number and a unit (s, m, h or d); ``"0s"`` ends the old key at once.

    >>> parse_grace("1h"), parse_grace("90s"), parse_grace("0s")
    (datetime.timedelta(seconds=3600), datetime.timedelta(seconds=90), datetime.timedelta(0))
    """
    match = DURATION.match(text)
    if not match:
        raise ConfigError(f"grace period '{text}' must be a number and a unit: 0s, 90s, 15m, 1h or 7d")
    grace = timedelta(seconds=float(match.group(1)) * SECONDS[match.group(2)])
    if grace > MAX_GRACE:
        raise ConfigError(f"grace period '{text}' is longer than a year: a replaced key should stop working sooner")
    return grace


def revoke_key(store: Store, name: str) -> GuardKey:
    """Revoke ``name`` (its current key and any a rotation replaced); running guards refuse it within a second."""
    return store.revoke_key(name)


def rotate_key(store: Store, name: str, grace: timedelta) -> tuple[str, datetime]:
    """A new key for ``name`` (printed once, like a created one) and when the key it replaces stops working."""
    token = new_token()
    _key, until = store.rotate_key(name, hash_key(token), grace)
    return token, until


@dataclass(frozen=True)
class KeyStatus:
    """One line of ``keys list``: the key, its state, the end of its old key's grace period and its last use."""

    key: GuardKey
    grace_until: datetime | None
    last_used: datetime | None

    def state(self, now: datetime) -> str:
        if self.key.revoked_at is not None:
            return f"revoked {_when(self.key.revoked_at)}"
        if self.key.rotated_at is not None:
            old = "old key valid until" if self.grace_until and self.grace_until > now else "old key ended"
            return f"rotated {_when(self.key.rotated_at)}, {old} {_when(self.grace_until)}"
        return "active"

    def row(self, now: datetime) -> list[str]:
        return [
            self.key.name,
            "admin" if self.key.admin else "user",
            self.key.owner or "-",
            _when(self.key.created_at),
            _when(self.last_used) if self.last_used else "never",
            self.state(now),
        ]


def _when(moment: datetime | None) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S") if moment is not None else "-"


def key_statuses(store: Store) -> list[KeyStatus]:
    """Every key, oldest first, with its state and last use (the last request any guard logged for it)."""
    last = store.key_last_use()
    grace = store.grace_periods()
    return [KeyStatus(key, grace.get(key.name), last.get(key.name)) for key in store.guard_keys()]
