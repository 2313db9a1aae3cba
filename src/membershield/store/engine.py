"""Where the history store lives (``--store``, the environment, the default file) and the engine to reach it.

On SQLite every transaction starts with ``BEGIN IMMEDIATE`` in WAL mode with a busy timeout, so several
processes recording at once queue instead of failing.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from membershield.store.errors import StoreError, first_line

DEFAULT_STORE = ".membershield/history.db"
STORE_ENV = "MEMBERSHIELD_STORE"  # a default for --store, so a team sets its database once per machine
DEFAULT_TIMEOUT = 30.0


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


def is_sqlite(url: URL) -> bool:
    return url.get_backend_name() == "sqlite"


def create_store_engine(url: URL, timeout: float, display: str) -> Engine:
    """An engine for ``url`` that gives up connecting or waiting for a lock after ``timeout`` seconds."""
    try:
        if is_sqlite(url):
            return _sqlite_engine(url, timeout)
        connect_args = {"connect_timeout": max(1, int(timeout))} if url.drivername.endswith("psycopg") else {}
        return create_engine(url, pool_pre_ping=True, connect_args=connect_args)
    except (NoSuchModuleError, ModuleNotFoundError) as exc:
        hint = " (install it with: pip install 'membershield[postgres]')" if "postgres" in str(url) else ""
        raise StoreError(f"history store {display}: no database driver: {first_line(exc)}{hint}") from exc
    except (ArgumentError, SQLAlchemyError) as exc:
        raise StoreError(f"history store {display}: {first_line(exc)}") from exc


def _sqlite_engine(url: URL, timeout: float) -> Engine:
    database = url.database
    if database and database != ":memory:":
        try:
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"history store {database}: cannot create its directory: {exc.strerror}") from exc
    engine = create_engine(url, poolclass=NullPool, connect_args={"timeout": timeout})
    busy_ms = int(timeout * 1000)

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
