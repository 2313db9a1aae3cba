"""Rows of the history store as plain values detached from the database, so callers never hold a session."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from membershield.result import worst_in_summary
from membershield.store.schema import AuditRow, GuardAlertRow, GuardKeyRow


@dataclass(frozen=True)
class GuardKey:
    """An API key of the guard service; only the sha256 of the key itself is stored.

    Found by a key that a rotation replaced, ``expires_at`` is when that key stops being accepted."""

    name: str
    admin: bool
    created_at: datetime
    owner: str | None = None
    revoked_at: datetime | None = None
    rotated_at: datetime | None = None
    expires_at: datetime | None = None

    def refusal(self, now: datetime) -> str | None:
        """Why the key is refused at ``now``, or None while it is valid."""
        if self.revoked_at is not None:
            return f"API key '{self.name}' was revoked at {self.revoked_at.isoformat(timespec='seconds')}"
        if self.expires_at is not None and now >= self.expires_at:
            return (
                f"API key '{self.name}' was rotated; this key's grace period ended at"
                f" {self.expires_at.isoformat(timespec='seconds')}: use the new key"
            )
        return None


@dataclass(frozen=True)
class AuditRecord:
    """One recorded audit, detached from the database."""

    id: int
    model_name: str
    model_version: str | None
    model_sha256: str | None
    fingerprints: dict[str, Any]
    metrics: dict[str, Any]
    verdict: str | None
    report_path: str | None
    out_dir: str | None
    created_at: datetime
    recorded_at: datetime

    @property
    def label(self) -> str:
        return f"audit #{self.id} of {self.model_name} ({self.created_at.isoformat(timespec='seconds')})"

    def comparison(self) -> dict[str, Any]:
        """The metrics in the shape :func:`membershield.gate.evaluate` takes as ``previous``."""
        return {**self.metrics, "label": self.label}

    def worst_attack(self) -> tuple[str, dict[str, Any]] | None:
        """The attack with the highest AUC, with its metrics."""
        return worst_in_summary(self.metrics)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        data["recorded_at"] = self.recorded_at.isoformat()
        return data


def as_utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every time stored here is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def audit_record(row: AuditRow) -> AuditRecord:
    return AuditRecord(
        id=row.id,
        model_name=row.model_name,
        model_version=row.model_version,
        model_sha256=row.model_sha256,
        fingerprints=dict(row.fingerprints or {}),
        metrics=dict(row.metrics or {}),
        verdict=row.verdict,
        report_path=row.report_path,
        out_dir=row.out_dir,
        created_at=as_utc(row.created_at),
        recorded_at=as_utc(row.recorded_at),
    )


def _utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


def guard_key(row: GuardKeyRow, expires_at: datetime | None = None) -> GuardKey:
    return GuardKey(
        name=row.name,
        admin=row.admin,
        created_at=as_utc(row.created_at),
        owner=row.owner,
        revoked_at=_utc_or_none(row.revoked_at),
        rotated_at=_utc_or_none(row.rotated_at),
        expires_at=_utc_or_none(expires_at),
    )


def alert_dict(row: GuardAlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key_name,
        "model": row.model_name,
        "pattern": row.pattern,
        "evidence": dict(row.evidence or {}),
        "time": as_utc(row.created_at).isoformat(),
        "policy": dict(row.policy) if row.policy else None,
    }
