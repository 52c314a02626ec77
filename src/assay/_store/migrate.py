"""Schema migrations of the store (Alembic), run by :class:`~assay._store.Store` on open.

A database made before migrations existed (tables present, no ``alembic_version``) gets its
missing tables created (``create_all``, as the store did before) and is stamped at the newest
revision. Changing ``tables.py`` needs a new revision in ``migrations/versions``; a test
(``tests/test_store_backends.py``) fails when the two drift apart. To write one::

    python -c "from sqlalchemy import create_engine; from assay._store.migrate import revision; \
               revision(create_engine('sqlite:////tmp/rev.db'), 'add X to Y')"

then review the generated file (SQLite and PostgreSQL both run it in the tests).
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, inspect, text

from assay._store.tables import Base

MIGRATIONS = Path(__file__).parent / "migrations"
_LOCK_KEY = 0x61737361  # "assa": the PostgreSQL advisory lock held while migrating


def _config(connection: Connection | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes["connection"] = connection
    return cfg


def head_revision() -> str:
    """The newest migration's revision id."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: Engine) -> str | None:
    """The revision the database is at (None: never migrated)."""
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine) -> None:
    """Bring the database to the newest revision (no-op when it is there already)."""
    head = head_revision()
    if current_revision(engine) == head:
        return
    with engine.begin() as conn:
        # one migrator at a time: the others wait for it, then find the database at head
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _LOCK_KEY})
        elif conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN EXCLUSIVE")  # also makes the DDL transactional under pysqlite
        cfg = _config(conn)
        if MigrationContext.configure(conn).get_current_revision() is None and inspect(conn).has_table("units"):
            Base.metadata.create_all(conn)
            command.stamp(cfg, "head")
        else:
            command.upgrade(cfg, "head")


def revision(engine: Engine, message: str) -> None:
    """Write a new migration for what ``tables.py`` changed, compared with the database at ``engine``
    (migrated to the newest revision first); review the generated file before committing it."""
    upgrade(engine)
    with engine.begin() as conn:
        command.revision(_config(conn), message=message, autogenerate=True)
