"""What the guard service keeps in the history store: its API keys, the requests it served, its alerts."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from membershield.store.connection import StoreConnection
from membershield.store.errors import StoreError
from membershield.store.records import GuardKey, alert_dict, guard_key
from membershield.store.schema import QUERY_ENDPOINTS, GuardAlertRow, GuardKeyRow, GuardRequestRow


class GuardLog(StoreConnection):
    """The guard's keys, request log and alerts in an open store."""

    def create_key(self, name: str, key_sha256: str, *, admin: bool = False) -> GuardKey:
        """Store a new API key by its hash; a name already in use is an error."""
        row = GuardKeyRow(name=name, key_sha256=key_sha256, admin=admin, created_at=datetime.now(UTC))
        try:
            with self._session() as session:
                session.add(row)
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise StoreError(f"history store {self.display} already has a guard key named '{name}'") from exc
            raise
        return guard_key(row)

    def find_key(self, key_sha256: str) -> GuardKey | None:
        """The key whose hash is ``key_sha256``, if any."""
        with self._session() as session:
            row = session.scalars(select(GuardKeyRow).where(GuardKeyRow.key_sha256 == key_sha256)).first()
            return guard_key(row) if row else None

    def guard_keys(self) -> list[GuardKey]:
        with self._session() as session:
            rows = session.scalars(select(GuardKeyRow).order_by(GuardKeyRow.id)).all()
            return [guard_key(r) for r in rows]

    def record_requests(self, requests: list[Mapping[str, Any]]) -> None:
        """Log served requests (key_name, model_name, endpoint, status, n_records, latency_ms, detail, created_at)."""
        if not requests:
            return
        # One Core INSERT ... executemany: the ORM's unit of work spent about 80 µs of interpreter time per
        # row on bookkeeping these plain rows do not need, on the guard's hot path for the GIL.
        with self._guard(), self.engine.begin() as connection:
            connection.execute(insert(GuardRequestRow), [dict(r) for r in requests])

    def record_alert(
        self, key_name: str, model_name: str, pattern: str, evidence: Mapping[str, Any], created_at: datetime
    ) -> dict[str, Any]:
        row = GuardAlertRow(
            key_name=key_name, model_name=model_name, pattern=pattern, evidence=dict(evidence), created_at=created_at
        )
        with self._session() as session:
            session.add(row)
            session.flush()
            return alert_dict(row)

    def alerts(self, limit: int = 100, model_name: str | None = None) -> list[dict[str, Any]]:
        """The most recent guard alerts, newest first; of ``model_name``'s guard only when given."""
        query = select(GuardAlertRow)
        if model_name is not None:
            query = query.where(GuardAlertRow.model_name == model_name)
        query = query.order_by(GuardAlertRow.created_at.desc(), GuardAlertRow.id.desc()).limit(limit)
        with self._session() as session:
            return [alert_dict(row) for row in session.scalars(query)]

    def guard_usage(
        self, since: datetime | None = None, limit: int = 10, model_name: str | None = None
    ) -> list[dict[str, Any]]:
        """Keys by records queried (successful predictions) since ``since``, most first; of ``model_name``'s
        guard only when given (guards of several models may share a store)."""
        records = func.sum(GuardRequestRow.n_records)
        query = select(GuardRequestRow.key_name, func.count(GuardRequestRow.id), records).where(
            GuardRequestRow.key_name.is_not(None),
            GuardRequestRow.status == 200,
            # dashboard and alert views are logged too, but query no records
            GuardRequestRow.endpoint.in_(QUERY_ENDPOINTS),
        )
        if since is not None:
            query = query.where(GuardRequestRow.created_at >= since)
        if model_name is not None:
            query = query.where(GuardRequestRow.model_name == model_name)
        query = query.group_by(GuardRequestRow.key_name).order_by(records.desc()).limit(limit)
        with self._session() as session:
            return [{"key": k, "requests": int(n), "records": int(r or 0)} for k, n, r in session.execute(query)]

    def guard_request_count(self) -> int:
        with self._session() as session:
            return int(session.scalar(select(func.count(GuardRequestRow.id))) or 0)
