"""worker liveness: each background job's last successful round

Revision ID: 3f9a6c1d2e70
Revises: 7c1e5d2a9b40
Create Date: 2026-12-01 02:00:00

One row per job (`escalation_breach_sweep`, ...), upserted by whichever worker ran a
successful round; /readyz and /metrics read it.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

import app.db

revision: str = '3f9a6c1d2e70'
down_revision: str | None = '7c4e2a91d0b3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        'worker_job',
        sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column('last_success_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('last_error_at', app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column('rounds', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('name', name=op.f('pk_worker_job')),
    )


def downgrade() -> None:
    op.drop_table('worker_job')
