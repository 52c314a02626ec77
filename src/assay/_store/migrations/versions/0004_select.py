"""indexes for unit selections and ordered span reads

Revision ID: 0004_select
Revises: 0010_env
Create Date: 2026-12-01 00:00:00

``units``: (outcome, has_error) for ``failed`` / ``passed`` (units not yet run through the
failure-signal detectors count by outcome and error spans); (ingested_at, unit_id) for the online
worker's walk in ingestion order (and time terms); unit_id with ``text_pattern_ops`` (PostgreSQL)
for ``prefix:``. ``source:`` is a substring test, which no B-tree serves: it reads the units
table's columns in SQL. ``spans``: (unit_id, start_ns) replaces the
index on unit_id alone, so a unit's spans come in time order from the index.
"""

from __future__ import annotations

from alembic import op

revision = '0004_select'
down_revision = '0010_env'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.create_index('ix_units_outcome', ['outcome', 'has_error'], unique=False)
        batch_op.create_index('ix_units_ingested', ['ingested_at', 'unit_id'], unique=False)
        batch_op.create_index('ix_units_id_pattern', ['unit_id'], unique=False,
                              postgresql_ops={'unit_id': 'text_pattern_ops'})
    with op.batch_alter_table('spans', schema=None) as batch_op:
        batch_op.create_index('ix_spans_unit_start', ['unit_id', 'start_ns'], unique=False)
        batch_op.drop_index('ix_spans_unit_id')


def downgrade() -> None:
    with op.batch_alter_table('spans', schema=None) as batch_op:
        batch_op.create_index('ix_spans_unit_id', ['unit_id'], unique=False)
        batch_op.drop_index('ix_spans_unit_start')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_index('ix_units_id_pattern')
        batch_op.drop_index('ix_units_ingested')
        batch_op.drop_index('ix_units_outcome')
