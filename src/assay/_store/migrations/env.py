"""Alembic environment of the assay store: runs on the connection the Store hands over.

Used through :func:`assay._store.migrate.upgrade`; ``render_as_batch`` lets ALTERs work on SQLite.
"""

from __future__ import annotations

from alembic import context

from assay._store.tables import Base

connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
