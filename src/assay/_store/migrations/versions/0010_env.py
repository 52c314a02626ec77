"""environments and releases of units (units.env, units.release), an API key's environment (api_keys.env)

Revision ID: 0010_env
Revises: 0007_signals
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010_env'
down_revision = '0007_signals'
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


def downgrade() -> None:
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('env')
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_units_release'))
        batch_op.drop_index(batch_op.f('ix_units_env'))
        batch_op.drop_column('release')
        batch_op.drop_column('env')
