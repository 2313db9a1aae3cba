"""An open history store: its engine, its sessions, the translation of database failures into
:class:`StoreError`, and the Alembic migration of its schema on open.

On PostgreSQL migrations are serialised with an advisory lock, so processes opening a new database at
once do not both create its tables.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Self

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from membershield.store.engine import DEFAULT_TIMEOUT, create_store_engine, is_sqlite, resolve_url
from membershield.store.errors import StoreError, explain_failure
from membershield.store.schema import VERSION_TABLE

HEAD = "head"
_PG_MIGRATION_LOCK = 0x6D656D62  # any constant shared by every membershield process


class StoreConnection:
    """The engine and schema of a store; :class:`membershield.store.Store` adds what is kept in it."""

    def __init__(self, store: str | None = None, *, timeout: float = DEFAULT_TIMEOUT, revision: str = HEAD) -> None:
        """Open the store at ``store`` (URL or file path; default SQLite file) and migrate it to ``revision``."""
        self.url = resolve_url(store)
        self.timeout = timeout
        self.display = self.url.database if self._is_sqlite else self.url.render_as_string(hide_password=True)
        self.engine = create_store_engine(self.url, timeout, self.display)
        try:
            self.upgrade(revision)
        except BaseException:
            self.engine.dispose()
            raise

    @property
    def _is_sqlite(self) -> bool:
        return is_sqlite(self.url)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        from alembic.util import CommandError

        try:
            yield
        except StoreError:
            raise
        except (SQLAlchemyError, CommandError, OSError, sqlite3.Error) as exc:
            raise StoreError(explain_failure(exc, self.display, self.timeout)) from exc

    @contextmanager
    def _session(self) -> Iterator[Session]:
        with self._guard(), Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield session

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

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()
