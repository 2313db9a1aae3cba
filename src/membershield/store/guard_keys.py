"""The guard's API keys in the history store: created, found by hash, revoked, rotated (the replaced key
accepted for a grace period) and listed with their last use."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from membershield.store.connection import StoreConnection
from membershield.store.errors import StoreError
from membershield.store.records import GuardKey, as_utc, guard_key
from membershield.store.schema import GuardKeyGraceRow, GuardKeyRow, GuardRequestRow


class GuardKeys(StoreConnection):
    """The guard's API keys in an open store (only their sha256 is kept)."""

    def create_key(self, name: str, key_sha256: str, *, admin: bool = False, owner: str | None = None) -> GuardKey:
        """Store a new API key by its hash; a name already in use (revoked keys included) is an error."""
        row = GuardKeyRow(name=name, key_sha256=key_sha256, admin=admin, owner=owner, created_at=datetime.now(UTC))
        try:
            with self._session() as session:
                session.add(row)
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise StoreError(f"history store {self.display} already has a guard key named '{name}'") from exc
            raise
        return guard_key(row)

    def find_key(self, key_sha256: str) -> GuardKey | None:
        """The key whose hash is ``key_sha256`` (the current one, or one a rotation replaced, then with its
        ``expires_at``), if any; revoked and expired keys are returned too, so the caller can say why."""
        with self._session() as session:
            row = session.scalars(select(GuardKeyRow).where(GuardKeyRow.key_sha256 == key_sha256)).first()
            if row is not None:
                return guard_key(row)
            found = session.execute(
                select(GuardKeyRow, GuardKeyGraceRow.expires_at)
                .join(GuardKeyGraceRow, GuardKeyGraceRow.key_id == GuardKeyRow.id)
                .where(GuardKeyGraceRow.key_sha256 == key_sha256)
            ).first()
            return guard_key(found[0], found[1]) if found else None

    def key_named(self, name: str) -> GuardKey | None:
        with self._session() as session:
            row = session.scalars(select(GuardKeyRow).where(GuardKeyRow.name == name)).first()
            return guard_key(row) if row else None

    def guard_keys(self) -> list[GuardKey]:
        with self._session() as session:
            rows = session.scalars(select(GuardKeyRow).order_by(GuardKeyRow.id)).all()
            return [guard_key(r) for r in rows]

    def _existing(self, session: Any, name: str) -> GuardKeyRow:
        row = session.scalars(select(GuardKeyRow).where(GuardKeyRow.name == name)).first()
        if row is None:
            names = session.scalars(select(GuardKeyRow.name).order_by(GuardKeyRow.id)).all()
            known = ", ".join(f"'{n}'" for n in names[:10]) or "none yet"
            raise StoreError(f"history store {self.display} has no guard key named '{name}' (keys: {known})")
        return row

    def revoke_key(self, name: str) -> GuardKey:
        """Revoke the key ``name`` and every key a rotation replaced; revoking twice keeps the first time."""
        with self._session() as session:
            row = self._existing(session, name)
            if row.revoked_at is None:
                row.revoked_at = datetime.now(UTC)
            session.flush()
            return guard_key(row)

    def rotate_key(self, name: str, new_sha256: str, grace: timedelta) -> tuple[GuardKey, datetime]:
        """Give ``name`` the key ``new_sha256``; the one it replaces is accepted until now + ``grace``
        (returned). A revoked key cannot be rotated: create a new one."""
        now = datetime.now(UTC)
        with self._session() as session:
            row = self._existing(session, name)
            if row.revoked_at is not None:
                raise StoreError(
                    f"guard key '{name}' was revoked at {as_utc(row.revoked_at).isoformat(timespec='seconds')}:"
                    " a revoked key stays revoked; create a new one with another name"
                )
            session.add(GuardKeyGraceRow(key_id=row.id, key_sha256=row.key_sha256, expires_at=now + grace))
            row.key_sha256 = new_sha256
            row.rotated_at = now
            session.flush()
            return guard_key(row), now + grace

    def grace_periods(self) -> dict[str, datetime]:
        """Per key name, when the last key a rotation replaced stops being accepted (past ones included)."""
        query = (
            select(GuardKeyRow.name, func.max(GuardKeyGraceRow.expires_at))
            .join(GuardKeyGraceRow, GuardKeyGraceRow.key_id == GuardKeyRow.id)
            .group_by(GuardKeyRow.name)
        )
        with self._session() as session:
            return {name: as_utc(until) for name, until in session.execute(query)}

    def key_last_use(self) -> dict[str, datetime]:
        """Per key name, the time of its last logged request (any guard, any endpoint)."""
        query = (
            select(GuardRequestRow.key_name, func.max(GuardRequestRow.created_at))
            .where(GuardRequestRow.key_name.is_not(None))
            .group_by(GuardRequestRow.key_name)
        )
        with self._session() as session:
            return {name: as_utc(last) for name, last in session.execute(query)}

    def key_stamp(self) -> tuple[Any, ...]:
        """A value that changes whenever a key is created, revoked or rotated: a running guard polls it and
        forgets the keys it remembered when it changes."""
        # counts, not times: every creation, revocation and rotation adds one, whatever the clocks of the
        # machines that made them say
        query = select(
            select(func.count(GuardKeyRow.id)).scalar_subquery(),
            select(func.count(GuardKeyRow.revoked_at)).scalar_subquery(),
            select(func.count(GuardKeyGraceRow.id)).scalar_subquery(),
        )
        with self._session() as session:
            return tuple(session.execute(query).one())
