"""failure signature lifecycle: state on signatures, transition history

Revision ID: 0011_lifecycle
Revises: 0012_audit
Create Date: 2026-12-07 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011_lifecycle'
down_revision = '0012_audit'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # signatures stored before this revision start as 'new' and are evaluated at the next update
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lifecycle', sa.String(length=20), nullable=False, server_default='new'))
        batch_op.add_column(sa.Column('lifecycle_at', sa.DateTime(), nullable=True))
    op.create_table('signature_lifecycle',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=True),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('signature_lifecycle', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_signature_lifecycle_at'), ['at'], unique=False)
        batch_op.create_index(batch_op.f('ix_signature_lifecycle_signature_id'), ['signature_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('signature_lifecycle', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_signature_lifecycle_signature_id'))
        batch_op.drop_index(batch_op.f('ix_signature_lifecycle_at'))
    op.drop_table('signature_lifecycle')
    with op.batch_alter_table('signatures', schema=None) as batch_op:
        batch_op.drop_column('lifecycle_at')
        batch_op.drop_column('lifecycle')
