"""webhook lease owner: which worker process holds a delivery's lease (its advisory lock id),
so another worker takes over at once when that process dies

Revision ID: 5b8e2f41c9d3
Revises: 5a7d3c2e9f14
Create Date: 2026-12-01 03:30:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '5b8e2f41c9d3'
down_revision: str | None = '5a7d3c2e9f14'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Leases taken before this change name no owner: they run out as before.
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_owner', sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_column('lease_owner')
