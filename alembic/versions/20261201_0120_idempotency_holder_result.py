"""idempotency keys: the holding process and the record the key produced

A claim names the API process that holds it (`holder`: a dead holder's claim is taken over at
once), and the business transaction that marks it committed records what it created
(`result_type`, `result_id`): a retry after the answer was lost rebuilds it from that record.

Revision ID: 7c1d2e3f4a5b
Revises: 95e60222a04c
Create Date: 2026-12-01 01:20:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = '7c1d2e3f4a5b'
down_revision: str | None = '80838a687e7e'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.add_column(sa.Column('holder', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))
        batch_op.add_column(sa.Column('result_type',
                                      sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True))
        batch_op.add_column(sa.Column('result_id', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('idempotency_key', schema=None) as batch_op:
        batch_op.drop_column('result_id')
        batch_op.drop_column('result_type')
        batch_op.drop_column('holder')
