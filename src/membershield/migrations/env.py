"""Alembic environment for the history store: always runs on the connection the store passes in."""

from __future__ import annotations

from alembic import context

from membershield.store import VERSION_TABLE, Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("membershield migrations run through membershield.store.Store, which passes a connection")

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    version_table=VERSION_TABLE,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
