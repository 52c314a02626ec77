"""review: step notes (comments and corrected outputs on a step), units added to review queues
(queue_additions) and the reviewers assigned to them (queue_reviewers); the app's actions are recorded in
``audit_log`` (0012_audit)

Revision ID: 0013_review
Revises: 0011_lifecycle
Create Date: 2026-12-06 00:26:45.029041
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0013_review'
down_revision = '0011_lifecycle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('step_notes',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.String(length=300), nullable=False),
    sa.Column('step', sa.Integer(), nullable=False),
    sa.Column('span_id', sa.String(length=16), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('author', sa.String(length=200), nullable=False),
    sa.Column('author_kind', sa.String(length=10), nullable=False),
    sa.Column('criterion_id', sa.Integer(), nullable=True),
    sa.Column('criterion_version', sa.Integer(), nullable=True),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('source', sa.String(length=300), nullable=False),
    sa.Column('extra', sa.JSON(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['criterion_id'], ['criteria.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.unit_id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('step_notes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_step_notes_unit_id'), ['unit_id'], unique=False)

    op.create_table('queue_additions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('unit_id', sa.String(length=300), nullable=False),
    sa.Column('origin', sa.String(length=40), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('added_by', sa.String(length=200), nullable=False),
    sa.Column('added_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], ),
    sa.ForeignKeyConstraint(['unit_id'], ['units.unit_id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('signature_id', 'unit_id')
    )
    with op.batch_alter_table('queue_additions', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_queue_additions_signature_id'), ['signature_id'], unique=False)

    op.create_table('queue_reviewers',
    sa.Column('signature_id', sa.Integer(), nullable=False),
    sa.Column('annotator', sa.String(length=200), nullable=False),
    sa.Column('assigned_by', sa.String(length=200), nullable=False),
    sa.Column('assigned_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['signature_id'], ['signatures.id'], ),
    sa.PrimaryKeyConstraint('signature_id', 'annotator')
    )



def downgrade() -> None:
    op.drop_table('queue_reviewers')
    with op.batch_alter_table('queue_additions', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_queue_additions_signature_id'))

    op.drop_table('queue_additions')
    with op.batch_alter_table('step_notes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_step_notes_unit_id'))

    op.drop_table('step_notes')
