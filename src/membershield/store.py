"""History of audits and gate verdicts in a database: SQLite by default, any SQLAlchemy URL (PostgreSQL).

Every audit is recorded with its model name and version, the model's and data's fingerprints, the
headline metrics of each attack (AUC and TPR at the audited FPRs, with their intervals), the report's path
and, once gated, its verdict. The schema is migrated with Alembic whenever a store is opened, so a history
file written by an older membershield keeps working after an upgrade.

Several processes may record at once. On SQLite every transaction starts with ``BEGIN IMMEDIATE`` in WAL
mode with a busy timeout, so writers queue instead of failing; on PostgreSQL migrations are serialised
with an advisory lock. Every database failure (a damaged file, a lock held too long, an unreachable
server) surfaces as one :class:`StoreError` line.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    create_engine,
    event,
    func,
    insert,
    select,
    text,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, IntegrityError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool

from membershield.errors import MembershieldError
from membershield.result import summary, worst_in_summary

DEFAULT_STORE = ".membershield/history.db"
STORE_ENV = "MEMBERSHIELD_STORE"  # a default for --store, so a team sets its database once per machine
VERSION_TABLE = "membershield_schema_version"
HEAD = "head"
_PG_MIGRATION_LOCK = 0x6D656D62  # any constant shared by every membershield process
DEFAULT_TIMEOUT = 30.0


class StoreError(MembershieldError):
    """The history store cannot be opened, read or written."""


# --------------------------------------------------------------------------------------------------
# Schema (the head revision of migrations/versions; change both together)


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


QUERY_ENDPOINTS = ("/v1/predict", "/v1/generate")  # the guard's routes that answer with model outputs


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


@dataclass(frozen=True)
class GuardKey:
    """An API key of the guard service; only the sha256 of the key itself is stored."""

    name: str
    admin: bool
    created_at: datetime


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


def _utc(moment: datetime) -> datetime:
    """SQLite returns naive datetimes; every time stored here is UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _record(row: AuditRow) -> AuditRecord:
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
        created_at=_utc(row.created_at),
        recorded_at=_utc(row.recorded_at),
    )


def _alert(row: GuardAlertRow) -> dict[str, Any]:
    return {
        "id": row.id,
        "key": row.key_name,
        "model": row.model_name,
        "pattern": row.pattern,
        "evidence": dict(row.evidence or {}),
        "time": _utc(row.created_at).isoformat(),
    }


# --------------------------------------------------------------------------------------------------
# Helpers


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
            return _utc(datetime.fromisoformat(value))
        except ValueError:
            pass
    return datetime.now(UTC)


def resolve_url(store: str | None) -> URL:
    """A SQLAlchemy URL from ``--store``: nothing -> the default SQLite file; a plain path -> SQLite file;
    ``postgresql://`` / ``postgres://`` -> the psycopg (3) driver."""
    value = store or os.environ.get(STORE_ENV) or DEFAULT_STORE
    if "://" not in value:
        return URL.create("sqlite", database=str(Path(value).expanduser().resolve()))
    value = re.sub(r"^postgres(ql)?://", "postgresql+psycopg://", value)
    try:
        return make_url(value)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(f"--store {value!r} is not a database URL or file path: {exc}") from exc


def _first_line(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    message = str(original).strip().splitlines()
    return message[0] if message else type(original).__name__


# --------------------------------------------------------------------------------------------------
# The store


class Store:
    """An open history store. Use as a context manager, or call :meth:`close`."""

    def __init__(self, store: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, revision: str = HEAD) -> None:
        """Open the store at ``store`` (URL or file path; default SQLite file) and migrate it to ``revision``."""
        self.url = resolve_url(store)
        self.timeout = timeout
        self.display = self.url.database if self._is_sqlite else self.url.render_as_string(hide_password=True)
        self.engine = self._create_engine()
        try:
            self.upgrade(revision)
        except BaseException:
            self.engine.dispose()
            raise

    # -- engine and errors -------------------------------------------------------------------------

    @property
    def _is_sqlite(self) -> bool:
        return self.url.get_backend_name() == "sqlite"

    def _create_engine(self) -> Engine:
        try:
            if self._is_sqlite:
                return self._sqlite_engine()
            connect_args = (
                {"connect_timeout": max(1, int(self.timeout))} if self.url.drivername.endswith("psycopg") else {}
            )
            return create_engine(self.url, pool_pre_ping=True, connect_args=connect_args)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            hint = " (install it with: pip install 'membershield[postgres]')" if "postgres" in str(self.url) else ""
            raise StoreError(f"history store {self.display}: no database driver: {_first_line(exc)}{hint}") from exc
        except (ArgumentError, SQLAlchemyError) as exc:
            raise StoreError(f"history store {self.display}: {_first_line(exc)}") from exc

    def _sqlite_engine(self) -> Engine:
        database = self.url.database
        if database and database != ":memory:":
            try:
                Path(database).parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"history store {database}: cannot create its directory: {exc.strerror}") from exc
        engine = create_engine(self.url, poolclass=NullPool, connect_args={"timeout": self.timeout})
        busy_ms = int(self.timeout * 1000)

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection, _record) -> None:
            # Let SQLAlchemy's "begin" below decide when a transaction starts (the driver's own implicit
            # BEGIN is DEFERRED, which lets two writers deadlock on the upgrade to a write lock).
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            try:
                cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
                cursor.execute("PRAGMA journal_mode = WAL")
                cursor.execute("PRAGMA foreign_keys = ON")
            finally:
                cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")

        return engine

    def _explain(self, exc: BaseException) -> str:
        message = _first_line(exc)
        lowered = message.lower()
        if "file is not a database" in lowered or "malformed" in lowered:
            return (
                f"history store {self.display} is damaged or not a SQLite database ({message});"
                " move it aside to start a new history, or pass --store"
            )
        if "locked" in lowered or "busy" in lowered:
            return (
                f"history store {self.display} is locked by another process (waited {self.timeout:g} s);"
                " try again when it has finished"
            )
        if "unable to open" in lowered or "readonly" in lowered or "read-only" in lowered:
            return f"history store {self.display} cannot be opened for writing ({message}); pass --store"
        if "can't locate revision" in lowered:
            return (
                f"history store {self.display} was written by a newer membershield ({message});"
                " upgrade membershield to read it"
            )
        return f"history store {self.display}: {message}"

    @contextmanager
    def _guard(self) -> Iterator[None]:
        from alembic.util import CommandError

        try:
            yield
        except StoreError:
            raise
        except (SQLAlchemyError, CommandError, OSError, sqlite3.Error) as exc:
            raise StoreError(self._explain(exc)) from exc

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._guard(), Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

    # -- schema --------------------------------------------------------------------------------------

    def upgrade(self, revision: str = HEAD) -> None:
        """Bring the schema to ``revision`` (normally the head; called on open)."""
        from alembic import command
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", "membershield:migrations")
        with self._guard(), self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
            config.attributes["connection"] = connection
            command.upgrade(config, revision)

    def revision(self) -> str | None:
        """The schema revision the database is at."""
        from alembic.runtime.migration import MigrationContext

        with self._guard(), self.engine.begin() as connection:
            context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
            return context.get_current_revision()

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- audits --------------------------------------------------------------------------------------

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
                return _record(row)
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
            return _record(row) if row is not None else None

    def get(self, audit_id: int) -> AuditRecord | None:
        with self._session() as session:
            row = session.get(AuditRow, audit_id)
            return _record(row) if row is not None else None

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
            return _record(row)

    def last_passing(self, model_name: str, exclude: AuditRecord | None = None) -> AuditRecord | None:
        """The most recent audit of ``model_name`` whose gate passed, other than ``exclude``."""
        query = select(AuditRow).where(AuditRow.model_name == model_name, AuditRow.verdict == "pass")
        if exclude is not None:
            query = query.where(AuditRow.id != exclude.id)
        query = query.order_by(AuditRow.created_at.desc(), AuditRow.id.desc())
        with self._session() as session:
            row = session.scalars(query).first()
            return _record(row) if row is not None else None

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
            return [_record(row) for row in reversed(session.scalars(query).all())]

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
                    "created_at": _utc(r.created_at).isoformat(),
                }
                for r in session.scalars(query)
            ]

    # -- guard ---------------------------------------------------------------------------------------

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
        return GuardKey(name=name, admin=admin, created_at=_utc(row.created_at))

    def find_key(self, key_sha256: str) -> GuardKey | None:
        """The key whose hash is ``key_sha256``, if any."""
        with self._session() as session:
            row = session.scalars(select(GuardKeyRow).where(GuardKeyRow.key_sha256 == key_sha256)).first()
            return GuardKey(name=row.name, admin=row.admin, created_at=_utc(row.created_at)) if row else None

    def guard_keys(self) -> list[GuardKey]:
        with self._session() as session:
            rows = session.scalars(select(GuardKeyRow).order_by(GuardKeyRow.id)).all()
            return [GuardKey(name=r.name, admin=r.admin, created_at=_utc(r.created_at)) for r in rows]

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
            return _alert(row)

    def alerts(self, limit: int = 100, model_name: str | None = None) -> list[dict[str, Any]]:
        """The most recent guard alerts, newest first; of ``model_name``'s guard only when given."""
        query = select(GuardAlertRow)
        if model_name is not None:
            query = query.where(GuardAlertRow.model_name == model_name)
        query = query.order_by(GuardAlertRow.created_at.desc(), GuardAlertRow.id.desc()).limit(limit)
        with self._session() as session:
            return [_alert(row) for row in session.scalars(query)]

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


def open_store(store: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Store:
    """Open (creating or upgrading as needed) the history store at a URL or path; default SQLite file."""
    return Store(store, timeout=timeout)
