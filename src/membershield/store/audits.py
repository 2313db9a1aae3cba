"""Audits and gate verdicts kept in the history store: recording them and reading them back.

An audit is recorded with its model name and version, the model's and data's fingerprints, the headline
metrics of each attack, the report's path and, once gated, its verdict.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from membershield.result import summary
from membershield.store.connection import StoreConnection
from membershield.store.errors import StoreError
from membershield.store.records import AuditRecord, as_utc, audit_record
from membershield.store.schema import AuditRow, GateRunRow


def audit_key(audit: Mapping[str, Any]) -> str:
    """Identity of an audit document: sha256 of its canonical JSON (the same audit.json, the same key)."""
    canonical = json.dumps(audit, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def default_model_name(audit: Mapping[str, Any]) -> str:
    """The model file's stem: ``models/fraud.joblib`` -> ``fraud``, ``train.py:recipe`` -> ``train``."""
    spec = str(audit.get("target", {}).get("spec") or "model")
    if ".py:" in spec:
        spec = spec.rsplit(":", 1)[0]
    return Path(spec).stem or "model"


def _created_at(audit: Mapping[str, Any]) -> datetime:
    value = audit.get("created_at")
    if isinstance(value, str):
        try:
            return as_utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    return datetime.now(UTC)


class AuditHistory(StoreConnection):
    """The audits and gate runs of an open store."""

    def record_audit(
        self,
        audit: Mapping[str, Any],
        *,
        model_name: str | None = None,
        model_version: str | None = None,
        report_path: str | Path | None = None,
        out_dir: str | Path | None = None,
    ) -> AuditRecord:
        """Record an audit document; recording the same document again returns the existing row."""
        key = audit_key(audit)
        existing = self.find(audit)
        if existing is not None:
            return existing
        row = AuditRow(
            audit_key=key,
            model_name=model_name or default_model_name(audit),
            model_version=model_version,
            model_sha256=audit.get("target", {}).get("sha256"),
            fingerprints=dict(audit.get("data", {}).get("fingerprints") or {}),
            metrics=summary(audit),
            verdict=None,
            report_path=str(report_path) if report_path is not None else None,
            out_dir=str(out_dir) if out_dir is not None else None,
            created_at=_created_at(audit),
            recorded_at=datetime.now(UTC),
        )
        try:
            with self._session() as session:
                session.add(row)
                session.flush()
                return audit_record(row)
        except StoreError as exc:
            if isinstance(exc.__cause__, IntegrityError):  # another process recorded it just now
                found = self.find(audit)
                if found is not None:
                    return found
            raise

    def find(self, audit: Mapping[str, Any]) -> AuditRecord | None:
        """The recorded row of this exact audit document, if any."""
        with self._session() as session:
            row = session.scalars(select(AuditRow).where(AuditRow.audit_key == audit_key(audit))).first()
            return audit_record(row) if row is not None else None

    def get(self, audit_id: int) -> AuditRecord | None:
        with self._session() as session:
            row = session.get(AuditRow, audit_id)
            return audit_record(row) if row is not None else None

    def rename(self, audit_id: int, model_name: str, model_version: str | None = None) -> AuditRecord:
        """Set the model name (and version, when given) an audit is recorded under."""
        with self._session() as session:
            row = session.get(AuditRow, audit_id)
            if row is None:
                raise StoreError(f"history store {self.display} has no audit #{audit_id}")
            row.model_name = model_name
            if model_version is not None:
                row.model_version = model_version
            session.flush()
            return audit_record(row)

    def last_passing(self, model_name: str, exclude: AuditRecord | None = None) -> AuditRecord | None:
        """The most recent audit of ``model_name`` whose gate passed, other than ``exclude``."""
        query = select(AuditRow).where(AuditRow.model_name == model_name, AuditRow.verdict == "pass")
        if exclude is not None:
            query = query.where(AuditRow.id != exclude.id)
        query = query.order_by(AuditRow.created_at.desc(), AuditRow.id.desc())
        with self._session() as session:
            row = session.scalars(query).first()
            return audit_record(row) if row is not None else None

    def record_verdict(
        self,
        audit_id: int,
        *,
        passed: bool,
        failures: list[str],
        policy: Mapping[str, Any],
        compared_with: str | None = None,
    ) -> None:
        """Set an audit's verdict and add the gate run (failures and policy) to its history."""
        with self._session() as session:
            row = session.get(AuditRow, audit_id)
            if row is None:
                raise StoreError(f"history store {self.display} has no audit #{audit_id}")
            row.verdict = "pass" if passed else "fail"
            session.add(
                GateRunRow(
                    audit_id=audit_id,
                    passed=passed,
                    failures=list(failures),
                    policy=dict(policy),
                    compared_with=compared_with,
                    created_at=datetime.now(UTC),
                )
            )

    def history(self, model_name: str | None = None, limit: int | None = None) -> list[AuditRecord]:
        """Recorded audits, oldest first (the most recent ``limit`` of them when given)."""
        query = select(AuditRow)
        if model_name is not None:
            query = query.where(AuditRow.model_name == model_name)
        query = query.order_by(AuditRow.created_at.desc(), AuditRow.id.desc())
        if limit is not None:
            query = query.limit(limit)
        with self._session() as session:
            return [audit_record(row) for row in reversed(session.scalars(query).all())]

    def gate_runs(self, audit_id: int) -> list[dict[str, Any]]:
        """Every gate run of one audit, oldest first."""
        query = select(GateRunRow).where(GateRunRow.audit_id == audit_id).order_by(GateRunRow.id)
        with self._session() as session:
            return [
                {
                    "passed": r.passed,
                    "failures": list(r.failures),
                    "policy": dict(r.policy),
                    "compared_with": r.compared_with,
                    "created_at": as_utc(r.created_at).isoformat(),
                }
                for r in session.scalars(query)
            ]
