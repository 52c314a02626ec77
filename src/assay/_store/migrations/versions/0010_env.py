"""environments and releases of units (units.env, units.release), an API key's environment (api_keys.env);
backfill runs named once: runs of kind 'score' (assay score) become 'backfill', their lineage too

Revision ID: 0010_env
Revises: 0013_review
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import op

revision = '0010_env'
down_revision = '0013_review'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # units stored before this revision have no environment: they count as [environments] default
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('env', sa.String(length=100), nullable=True))
        batch_op.add_column(sa.Column('release', sa.String(length=100), nullable=True))
        batch_op.create_index(batch_op.f('ix_units_env'), ['env'], unique=False)
        batch_op.create_index(batch_op.f('ix_units_release'), ['release'], unique=False)
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('env', sa.String(length=100), nullable=True))
    rename_score_runs()


def rename_score_runs() -> None:
    """Runs of kind ``score`` (``assay score`` before this revision) become ``backfill``, and so does the
    ``run_kind`` of the lineage in their parameters, so drift and signals count them as backfills."""
    runs = sa.table('runs', sa.column('run_id', sa.String), sa.column('kind', sa.String),
                    sa.column('params', sa.JSON))
    conn = op.get_bind()
    for run_id, params in conn.execute(sa.select(runs.c.run_id, runs.c.params).where(runs.c.kind == 'score')).all():
        data = json.loads(params) if isinstance(params, str) else dict(params or {})
        for entry in (data.get('lineage') or {}).values():
            if isinstance(entry, dict) and entry.get('run_kind') == 'score':
                entry['run_kind'] = 'backfill'
        conn.execute(sa.update(runs).where(runs.c.run_id == run_id).values(kind='backfill', params=data))


def downgrade() -> None:
    # backfill runs keep their kind: before this revision both 'score' and 'backfill' were written
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('env')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_units_release'))
        batch_op.drop_index(batch_op.f('ix_units_env'))
        batch_op.drop_column('release')
        batch_op.drop_column('env')
