"""Alembic migrations of the store (see assay._store.migrate)."""
