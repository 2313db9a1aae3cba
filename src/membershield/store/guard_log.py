"""What the guard service keeps in the history store: the requests it served, the records each key queried
with the answers it was given, and its alerts (its API keys: :mod:`.guard_keys`)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, select

from membershield.store.connection import StoreConnection
from membershield.store.records import alert_dict, as_utc
from membershield.store.schema import QUERY_ENDPOINTS, GuardAlertRow, GuardQueryRow, GuardRequestRow


class GuardLog(StoreConnection):
    """The guard's request log, query log and alerts in an open store."""

    def record_requests(self, requests: list[Mapping[str, Any]]) -> None:
        """Log served requests (key_name, model_name, endpoint, status, n_records, latency_ms, detail, created_at)."""
        if not requests:
            return
        # One Core INSERT ... executemany: the ORM's unit of work spent about 80 µs of interpreter time per
        # row on bookkeeping these plain rows do not need, on the guard's hot path for the GIL.
        with self._guard(), self.engine.begin() as connection:
            connection.execute(insert(GuardRequestRow), [dict(r) for r in requests])

    def record_queries(self, queries: list[Mapping[str, Any]]) -> None:
        """Log answered requests' records and answers (key_name, model_name, n_records, n_features, records,
        n_classes, answers, created_at: see :class:`GuardQueryRow`)."""
        if not queries:
            return
        with self._guard(), self.engine.begin() as connection:
            connection.execute(insert(GuardQueryRow), [dict(q) for q in queries])

    def queries_of(self, key_name: str, model_name: str, until: datetime | None = None) -> list[dict[str, Any]]:
        """The logged requests of one key to one model's guard, oldest first (up to ``until`` when given)."""
        query = select(GuardQueryRow).where(GuardQueryRow.key_name == key_name, GuardQueryRow.model_name == model_name)
        if until is not None:
            query = query.where(GuardQueryRow.created_at <= until)
        with self._session() as session:
            rows = session.scalars(query.order_by(GuardQueryRow.created_at, GuardQueryRow.id)).all()
            return [
                {
                    "n_records": r.n_records,
                    "n_features": r.n_features,
                    "records": r.records,
                    "n_classes": r.n_classes,
                    "answers": r.answers,
                    "created_at": as_utc(r.created_at),
                }
                for r in rows
            ]

    def record_alert(
        self,
        key_name: str,
        model_name: str,
        pattern: str,
        evidence: Mapping[str, Any],
        created_at: datetime,
        policy: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        row = GuardAlertRow(
            key_name=key_name,
            model_name=model_name,
            pattern=pattern,
            evidence=dict(evidence),
            created_at=created_at,
            policy=dict(policy) if policy is not None else None,
        )
        with self._session() as session:
            session.add(row)
            session.flush()
            return alert_dict(row)

    def alert(self, alert_id: int) -> dict[str, Any] | None:
        with self._session() as session:
            row = session.get(GuardAlertRow, alert_id)
            return alert_dict(row) if row is not None else None

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
