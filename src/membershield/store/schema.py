"""The history store's tables as ORM classes: the head revision of ``migrations/versions``.

Change these and add a migration together; a history file already written carries the old revision.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

VERSION_TABLE = "membershield_schema_version"
QUERY_ENDPOINTS = ("/v1/predict", "/v1/generate")  # the guard's routes that answer with model outputs


class Base(DeclarativeBase):
    pass


class AuditRow(Base):
    __tablename__ = "audits"
    __table_args__ = (Index("ix_audits_model_name_created_at", "model_name", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_key: Mapped[str] = mapped_column(String(64), unique=True)
    model_name: Mapped[str] = mapped_column(String(255), index=True)
    model_version: Mapped[str | None] = mapped_column(String(255))
    model_sha256: Mapped[str | None] = mapped_column(String(64))
    fingerprints: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    verdict: Mapped[str | None] = mapped_column(String(4))
    report_path: Mapped[str | None] = mapped_column(Text)
    out_dir: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GateRunRow(Base):
    __tablename__ = "gate_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(Integer, ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    passed: Mapped[bool] = mapped_column(Boolean)
    failures: Mapped[list[str]] = mapped_column(JSON)
    policy: Mapped[dict[str, Any]] = mapped_column(JSON)
    compared_with: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GuardKeyRow(Base):
    __tablename__ = "guard_keys"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    admin: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    owner: Mapped[str | None] = mapped_column(String(255))  # who answers for the key (a person, a team)
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    rotated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # the last rotation


class GuardKeyGraceRow(Base):
    """A key replaced by a rotation, still accepted until ``expires_at`` (unless its key is revoked)."""

    __tablename__ = "guard_key_grace"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_id: Mapped[int] = mapped_column(Integer, ForeignKey("guard_keys.id", ondelete="CASCADE"), index=True)
    key_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class GuardRequestRow(Base):
    __tablename__ = "guard_requests"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_name: Mapped[str | None] = mapped_column(String(255), index=True)
    model_name: Mapped[str] = mapped_column(String(255))
    endpoint: Mapped[str] = mapped_column(String(64))
    status: Mapped[int] = mapped_column(Integer)
    n_records: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[float] = mapped_column(Float)
    detail: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class GuardAlertRow(Base):
    __tablename__ = "guard_alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_name: Mapped[str] = mapped_column(String(255), index=True)
    model_name: Mapped[str] = mapped_column(String(255))
    pattern: Mapped[str] = mapped_column(String(64))
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    policy: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the guard's policy when the alert was raised


class GuardQueryRow(Base):
    """One answered request's records (float64, as the probing detector reads them) and the answers the
    caller was given (float64 probabilities; one-hot labels for a label-only answer), so that an incident
    can say what the key learnt."""

    __tablename__ = "guard_queries"
    __table_args__ = (Index("ix_guard_queries_model_key_created", "model_name", "key_name", "created_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key_name: Mapped[str] = mapped_column(String(255))
    model_name: Mapped[str] = mapped_column(String(255))
    n_records: Mapped[int] = mapped_column(Integer)
    n_features: Mapped[int] = mapped_column(Integer)
    records: Mapped[bytes] = mapped_column(LargeBinary)
    n_classes: Mapped[int | None] = mapped_column(Integer)
    answers: Mapped[bytes | None] = mapped_column(LargeBinary)  # None where the answer held no labels we can map
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetRow(Base):
    """A table an audit read, by its content fingerprint (the same content is one dataset wherever it lies)."""

    __tablename__ = "datasets"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    fingerprint: Mapped[str] = mapped_column(String(64), unique=True)
    file_name: Mapped[str] = mapped_column(String(255))
    path: Mapped[str] = mapped_column(Text)
    n_rows: Mapped[int | None] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(255))
    scan: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    recorded_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class DatasetUseRow(Base):
    """What one audited model did with one dataset: trained on it, was audited on it, or had it removed."""

    __tablename__ = "dataset_uses"
    __table_args__ = (UniqueConstraint("audit_id", "dataset_id", "role", name="uq_dataset_uses_audit_dataset_role"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    audit_id: Mapped[int] = mapped_column(Integer, ForeignKey("audits.id", ondelete="CASCADE"), index=True)
    dataset_id: Mapped[int] = mapped_column(Integer, ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    role: Mapped[str] = mapped_column(String(16))
