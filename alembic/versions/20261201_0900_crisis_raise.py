"""crisis raise: late watch-log entries

Revision ID: c7e3a91d4b20
Revises: 95e60222a04c
Create Date: 2026-12-01 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from sqlalchemy import Text  # noqa: F401 (autogenerate renders JSONB(astext_type=Text()))
from alembic import op

import app.db  # noqa: F401

revision: str = 'c7e3a91d4b20'
down_revision: str | None = '95e60222a04c'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Entries written before this change were never judged late: they stay on time.
    with op.batch_alter_table('escalation_observation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('late', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('escalation_observation', schema=None) as batch_op:
        batch_op.drop_column('late')
