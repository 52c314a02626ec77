"""scales: criterion scale, annotation value, pairwise second unit and shown order

Revision ID: 0006_scales
Revises: 0003_online
Create Date: 2026-12-05 23:03:47.805542

Existing criteria keep a NULL scale (binary) and existing annotations a NULL value (their label is the
value), so nothing is rewritten.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006_scales'
down_revision = '0007_signals'
branch_labels = None
depends_on = None

FK_SECOND_UNIT = "fk_annotations_second_unit_id_units"


def upgrade() -> None:
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.add_column(sa.Column('value', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('second_unit_id', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('shown_order', sa.String(length=20), nullable=True))
        batch_op.alter_column('label', existing_type=sa.VARCHAR(length=10), nullable=True)
        batch_op.create_foreign_key(FK_SECOND_UNIT, 'units', ['second_unit_id'], ['unit_id'])

    with op.batch_alter_table('criteria', schema=None) as batch_op:
        batch_op.add_column(sa.Column('scale', sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('criteria', schema=None) as batch_op:
        batch_op.drop_column('scale')

    # labels on non-binary scales have no pass/fail label: the older schema cannot hold them
    op.execute("DELETE FROM annotations WHERE label IS NULL")
    with op.batch_alter_table('annotations', schema=None) as batch_op:
        batch_op.drop_constraint(FK_SECOND_UNIT, type_='foreignkey')
        batch_op.alter_column('label', existing_type=sa.VARCHAR(length=10), nullable=False)
        batch_op.drop_column('shown_order')
        batch_op.drop_column('second_unit_id')
        batch_op.drop_column('value')
