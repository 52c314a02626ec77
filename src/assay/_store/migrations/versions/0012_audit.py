"""audit log, blind review, criteria covering several signatures

Revision ID: 0012_audit
Revises: 0005_capture
Create Date: 2026-12-06 00:30:36.926947

``audit_log``: who did what, when, from where (sign-ins and their failures, admin actions), append-only.
``criterion_signatures``: the signatures a criterion covers besides the one it was written for.
``annotations.blind``: whether a label was made without seeing another one (NULL for every label made
before: not known). ``review_queues.blind``: blind review per queue, on for every existing queue.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012_audit'
down_revision = '0005_capture'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('audit_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(), nullable=False),
    sa.Column('who', sa.String(length=200), nullable=False),
    sa.Column('action', sa.String(length=60), nullable=False),
    sa.Column('target', sa.String(length=300), nullable=False),
    sa.Column('client', sa.String(length=100), nullable=True),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.create_index('ix_audit_log_action_client', ['action', 'client'], unique=False)
        batch_op.create_index('ix_audit_log_action_target', ['action', 'target'], unique=False)
        batch_op.create_index(batch_op.f('ix_audit_log_at'), ['at'], unique=False)

    op.create_table('criterion_signatures',
    sa.Column('criterion_id', sa.Integer(), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('added_by', sa.String(length=200), nullable=False),
    sa.Column('added_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['criterion_id'], ['criteria.id'], ),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], ),
    sa.PrimaryKeyConstraint('criterion_id', 'signature_id')
    )
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blind', sa.Boolean(), nullable=True))

    with op.batch_alter_table('review_queues', schema=None) as batch_op:
        batch_op.add_column(sa.Column('blind', sa.Boolean(), server_default=sa.true(), nullable=False))



def downgrade() -> None:
    with op.batch_alter_table('review_queues', schema=None) as batch_op:
        batch_op.drop_column('blind')

    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_column('blind')

    op.drop_table('criterion_signatures')
    with op.batch_alter_table('audit_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_log_at'))
        batch_op.drop_index('ix_audit_log_action_target')
        batch_op.drop_index('ix_audit_log_action_client')

    op.drop_table('audit_log')
