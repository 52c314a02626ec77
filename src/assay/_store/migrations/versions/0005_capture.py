"""capture: how each score's verdict was read (scores.parse_status); inline message media by SHA-256 (media)

Revision ID: 0005_capture
Revises: 0006_scales
Create Date: 2026-12-05 10:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_capture'
down_revision = '0006_scales'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parse_status', sa.String(length=10), nullable=True))
    op.create_table('media',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('mime_type', sa.String(length=200), nullable=True),
    sa.Column('size_bytes', sa.Integer(), nullable=False),
    sa.Column('data', sa.LargeBinary(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.PrimaryKeyConstraint('sha256')
    )


def downgrade() -> None:
    op.drop_table('media')
    with op.batch_alter_table('scores', schema=None) as batch_op:
        batch_op.drop_column('parse_status')
