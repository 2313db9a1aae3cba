"""Lineage kept in the history store: the datasets audits read, and which audited model used which.

A dataset is identified by its content fingerprint (the sha256 an audit already computes of each table),
so the same table copied elsewhere is one dataset, and a file edited in place becomes a new one. Each use
ties a recorded audit (and so a model name and version) to a dataset with a role: ``trained`` (the
audit's members), ``audited`` (its holdout), ``population`` or ``forgotten`` (records removed before
retraining, checked by the unlearning audit).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from membershield.store.connection import StoreConnection
from membershield.store.errors import StoreError
from membershield.store.records import as_utc
from membershield.store.schema import AuditRow, DatasetRow, DatasetUseRow

ROLES = ("trained", "audited", "population", "forgotten")
SHORT = 12  # fingerprint characters shown to people; any unique prefix finds a dataset


@dataclass(frozen=True)
class DatasetRecord:
    """One recorded dataset, detached from the database."""

    id: int
    fingerprint: str
    file_name: str
    path: str
    n_rows: int | None
    version: str | None
    scan: dict[str, Any] | None
    recorded_at: datetime

    @property
    def short(self) -> str:
        return self.fingerprint[:SHORT]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fingerprint": self.fingerprint,
            "file_name": self.file_name,
            "path": self.path,
            "n_rows": self.n_rows,
            "version": self.version,
            "scan": self.scan,
            "recorded_at": self.recorded_at.isoformat(),
        }


@dataclass(frozen=True)
class DatasetUse:
    """A dataset in the role it had in one recorded audit of a model version."""

    audit_id: int
    model_name: str
    model_version: str | None
    model_sha256: str | None
    audited_at: datetime
    role: str
    dataset: DatasetRecord

    def to_dict(self) -> dict[str, Any]:
        return {
            "audit_id": self.audit_id,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "model_sha256": self.model_sha256,
            "audited_at": self.audited_at.isoformat(),
            "role": self.role,
            "dataset": self.dataset.to_dict(),
        }


@dataclass(frozen=True)
class DatasetEntry:
    """A dataset as an audit saw it, to be recorded with its role."""

    role: str
    fingerprint: str
    path: str
    file_name: str
    n_rows: int | None = None
    version: str | None = None


def dataset_record(row: DatasetRow) -> DatasetRecord:
    return DatasetRecord(
        id=row.id,
        fingerprint=row.fingerprint,
        file_name=row.file_name,
        path=row.path,
        n_rows=row.n_rows,
        version=row.version,
        scan=dict(row.scan) if row.scan is not None else None,
        recorded_at=as_utc(row.recorded_at),
    )


def _dataset_row(session: Session, entry: DatasetEntry) -> DatasetRow:
    """The dataset of ``entry``'s fingerprint, created when new. Its path follows the file (the latest
    recording says where it lies now); its row count and version label, once set, are kept."""
    row = session.scalars(select(DatasetRow).where(DatasetRow.fingerprint == entry.fingerprint)).first()
    if row is None:
        row = DatasetRow(
            fingerprint=entry.fingerprint,
            file_name=entry.file_name,
            path=entry.path,
            n_rows=entry.n_rows,
            version=entry.version,
            scan=None,
            recorded_at=datetime.now(UTC),
        )
        session.add(row)
        session.flush()
        return row
    row.path, row.file_name = entry.path, entry.file_name
    if row.n_rows is None:
        row.n_rows = entry.n_rows
    if row.version is None:
        row.version = entry.version
    return row


class Lineage(StoreConnection):
    """The datasets and their uses in an open store."""

    def record_lineage(self, audit_id: int, entries: Sequence[DatasetEntry]) -> list[DatasetRecord]:
        """Record the datasets of a recorded audit and their roles; recording them again changes nothing."""
        unknown = sorted({e.role for e in entries} - set(ROLES))
        if unknown:
            raise ValueError(f"unknown dataset role(s) {unknown}; roles are {ROLES}")
        try:
            return self._record_lineage(audit_id, entries)
        except StoreError as exc:
            if not isinstance(exc.__cause__, IntegrityError):
                raise
            # another process recorded one of these datasets (or uses) just now: it exists, so try again
            return self._record_lineage(audit_id, entries)

    def _record_lineage(self, audit_id: int, entries: Sequence[DatasetEntry]) -> list[DatasetRecord]:
        with self._session() as session:
            if session.get(AuditRow, audit_id) is None:
                raise StoreError(f"history store {self.display} has no audit #{audit_id}")
            recorded = []
            for entry in entries:
                row = _dataset_row(session, entry)
                used = select(DatasetUseRow.id).where(
                    DatasetUseRow.audit_id == audit_id,
                    DatasetUseRow.dataset_id == row.id,
                    DatasetUseRow.role == entry.role,
                )
                if session.scalars(used).first() is None:
                    session.add(DatasetUseRow(audit_id=audit_id, dataset_id=row.id, role=entry.role))
                session.flush()
                recorded.append(dataset_record(row))
            return recorded

    def uses_of_model(self, model_name: str, model_version: str | None = None) -> list[DatasetUse]:
        """Every dataset use of a model's recorded audits (of one version when given), oldest audit first."""
        query = self._uses().where(AuditRow.model_name == model_name)
        if model_version is not None:
            query = query.where(AuditRow.model_version == model_version)
        return self._read_uses(query)

    def uses_of_dataset(self, dataset_id: int) -> list[DatasetUse]:
        """Every recorded use of one dataset, oldest audit first: the models that must be retrained when
        it is withdrawn."""
        return self._read_uses(self._uses().where(DatasetUseRow.dataset_id == dataset_id))

    def find_datasets(self, prefix: str) -> list[DatasetRecord]:
        """The datasets whose fingerprint starts with ``prefix`` (case-insensitive)."""
        digits = "".join(c for c in prefix.strip().lower() if c in "0123456789abcdef")
        if not digits:
            return []
        pattern = digits + "%"
        query = select(DatasetRow).where(DatasetRow.fingerprint.like(pattern)).order_by(DatasetRow.id)
        with self._session() as session:
            return [dataset_record(row) for row in session.scalars(query)]

    def attach_scan(self, dataset_id: int, scan: Mapping[str, Any]) -> DatasetRecord:
        """Keep a data scan's summary with a dataset (a newer scan replaces an older one)."""
        with self._session() as session:
            row = session.get(DatasetRow, dataset_id)
            if row is None:
                raise StoreError(f"history store {self.display} has no dataset #{dataset_id}")
            row.scan = dict(scan)
            session.flush()
            return dataset_record(row)

    def model_names(self) -> list[str]:
        """The names of every model with a recorded audit, sorted."""
        with self._session() as session:
            return sorted(session.scalars(select(AuditRow.model_name).distinct()))

    @staticmethod
    def _uses() -> Any:
        return (
            select(DatasetUseRow.role, AuditRow, DatasetRow)
            .join(AuditRow, AuditRow.id == DatasetUseRow.audit_id)
            .join(DatasetRow, DatasetRow.id == DatasetUseRow.dataset_id)
            .order_by(AuditRow.created_at, AuditRow.id, DatasetUseRow.id)
        )

    def _read_uses(self, query: Any) -> list[DatasetUse]:
        with self._session() as session:
            return [
                DatasetUse(
                    audit_id=audit.id,
                    model_name=audit.model_name,
                    model_version=audit.model_version,
                    model_sha256=audit.model_sha256,
                    audited_at=as_utc(audit.created_at),
                    role=role,
                    dataset=dataset_record(dataset),
                )
                for role, audit, dataset in session.execute(query)
            ]
