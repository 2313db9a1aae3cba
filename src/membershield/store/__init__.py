"""History of audits and gate verdicts in a database: SQLite by default, any SQLAlchemy URL (PostgreSQL).

Every audit is recorded with its model name and version, the model's and data's fingerprints, the
headline metrics of each attack (AUC and TPR at the audited FPRs, with their intervals), the report's path
and, once gated, its verdict. The schema is migrated with Alembic whenever a store is opened, so a history
file written by an older membershield keeps working after an upgrade.

Several processes may record at once. On SQLite every transaction starts with ``BEGIN IMMEDIATE`` in WAL
mode with a busy timeout, so writers queue instead of failing; on PostgreSQL migrations are serialised
with an advisory lock. Every database failure (a damaged file, a lock held too long, an unreachable
server) surfaces as one :class:`StoreError` line.

The modules: ``schema`` (the tables), ``records`` (rows as plain values), ``engine`` (where the store is
and how to reach it), ``errors``, ``connection`` (sessions and migrations), ``audits``, ``guard_keys``,
``guard_log`` and ``lineage`` (what is kept: audits, the guard's keys and log, the datasets audits read);
:class:`Store` here joins the last four.
"""

from __future__ import annotations

from membershield.store.audits import AuditHistory, audit_key, default_model_name
from membershield.store.connection import HEAD, StoreConnection
from membershield.store.engine import DEFAULT_STORE, DEFAULT_TIMEOUT, STORE_ENV, resolve_url
from membershield.store.errors import StoreError
from membershield.store.guard_keys import GuardKeys
from membershield.store.guard_log import GuardLog
from membershield.store.lineage import ROLES, DatasetEntry, DatasetRecord, DatasetUse, Lineage
from membershield.store.records import AuditRecord, GuardKey
from membershield.store.schema import (
    QUERY_ENDPOINTS,
    VERSION_TABLE,
    AuditRow,
    Base,
    DatasetRow,
    DatasetUseRow,
    GateRunRow,
    GuardAlertRow,
    GuardKeyGraceRow,
    GuardKeyRow,
    GuardQueryRow,
    GuardRequestRow,
)

__all__ = [
    "DEFAULT_STORE",
    "DEFAULT_TIMEOUT",
    "HEAD",
    "QUERY_ENDPOINTS",
    "ROLES",
    "STORE_ENV",
    "VERSION_TABLE",
    "AuditRecord",
    "AuditRow",
    "Base",
    "DatasetEntry",
    "DatasetRecord",
    "DatasetRow",
    "DatasetUse",
    "DatasetUseRow",
    "GateRunRow",
    "GuardAlertRow",
    "GuardKey",
    "GuardKeyGraceRow",
    "GuardKeyRow",
    "GuardQueryRow",
    "GuardRequestRow",
    "Lineage",
    "Store",
    "StoreError",
    "audit_key",
    "default_model_name",
    "open_store",
    "resolve_url",
]


class Store(AuditHistory, GuardKeys, GuardLog, Lineage, StoreConnection):
    """An open history store. Use as a context manager, or call :meth:`close`."""


def open_store(store: str | None = None, *, timeout: float = DEFAULT_TIMEOUT) -> Store:
    """Open (creating or upgrading as needed) the history store at a URL or path; default SQLite file."""
    return Store(store, timeout=timeout)
