"""token usage, cost and latency per unit (units.usage)

Revision ID: 0008_usage
Revises: 0003_online
Create Date: 2026-12-04 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008_usage'
down_revision = '0003_online'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # units stored before this revision get their usage computed from their spans when first read
    # (assay._store.usage.unit_usages), so the migration does not read every span
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('usage', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_column('usage')
