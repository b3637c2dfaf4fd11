"""crisis raise: escalations about a person by any identifier or only a place (subject optional,
blind raises, what the raiser reported); late watch-log entries

Revision ID: c7e3a91d4b20
Revises: 95e60222a04c
Create Date: 2026-12-01 09:00:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from sqlalchemy import Text  # noqa: F401 (autogenerate renders JSONB(astext_type=Text()))
from alembic import op
from sqlalchemy.dialects import postgresql

import app.db  # noqa: F401

revision: str = 'c7e3a91d4b20'
down_revision: str | None = '7c1e5d2a9b40'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Entries written before this change were never judged late: they stay on time.
    with op.batch_alter_table('escalation_observation', schema=None) as batch_op:
        batch_op.add_column(sa.Column('late', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
    # Escalations raised before this change all named a person the raiser could see.
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.alter_column('participant_id', existing_type=sa.Uuid(), nullable=True)
        batch_op.add_column(sa.Column('raised_blind', sa.Boolean(), nullable=False,
                                      server_default=sa.false()))
        batch_op.add_column(sa.Column('reported', sa.JSON().with_variant(
            postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=True))
        batch_op.create_index('ix_escalation_raised_by', ['raised_by'], unique=False)


def downgrade() -> None:
    # An escalation without a person cannot go back to a schema that requires one: refuse
    # rather than invent a subject or drop a crisis record.
    bind = op.get_bind()
    if bind.execute(sa.text('SELECT 1 FROM escalation WHERE participant_id IS NULL LIMIT 1')
                    ).first() is not None:
        raise RuntimeError('escalations without a linked person exist: link them first')
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.drop_index('ix_escalation_raised_by')
        batch_op.drop_column('reported')
        batch_op.drop_column('raised_blind')
        batch_op.alter_column('participant_id', existing_type=sa.Uuid(), nullable=False)
    with op.batch_alter_table('escalation_observation', schema=None) as batch_op:
        batch_op.drop_column('late')
