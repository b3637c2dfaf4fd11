"""webhook deliveries ordered per record, a crisis lane, an endpoint's retry time

Revision ID: 7c1e5d2a9b40
Revises: 95e60222a04c
Create Date: 2026-12-01 00:30:00

Each delivery carries the record its event is about (`entity_id`, the unit of ordering) and
its lane (`crisis`); an endpoint that is failing carries the time of its next routine probe
(`retry_at`). Existing deliveries are filled in from their outbox events.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

import app.db

revision: str = '7c1e5d2a9b40'
down_revision: str | None = '95e60222a04c'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_endpoint', schema=None) as batch_op:
        batch_op.add_column(sa.Column('retry_at', app.db.UTCDateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.add_column(sa.Column('entity_id', sa.Uuid(), nullable=True))
        batch_op.add_column(sa.Column('crisis', sa.Boolean(), nullable=True))
    op.execute(
        "UPDATE webhook_delivery SET entity_id = (SELECT o.entity_id FROM outbox_event o "
        "WHERE o.id = webhook_delivery.event_id), crisis = (event_type LIKE 'escalation.%' "
        "OR event_type LIKE 'observation.%')")
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.alter_column('entity_id', existing_type=sa.Uuid(), nullable=False)
        batch_op.alter_column('crisis', existing_type=sa.Boolean(), nullable=False)
        batch_op.drop_index('ix_webhook_delivery_endpoint_status')
        batch_op.create_index('ix_webhook_delivery_lane',
                              ['endpoint_id', 'crisis', 'status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_webhook_delivery_record',
                              ['endpoint_id', 'entity_id', 'status', 'event_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('webhook_delivery', schema=None) as batch_op:
        batch_op.drop_index('ix_webhook_delivery_record')
        batch_op.drop_index('ix_webhook_delivery_lane')
        batch_op.create_index('ix_webhook_delivery_endpoint_status',
                              ['endpoint_id', 'status', 'event_id'], unique=False)
        batch_op.drop_column('crisis')
        batch_op.drop_column('entity_id')
    with op.batch_alter_table('webhook_endpoint', schema=None) as batch_op:
        batch_op.drop_column('retry_at')
