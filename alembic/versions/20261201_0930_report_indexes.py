"""report indexes: support sessions and escalations by facility, network and time (the monthly
program report aggregates a month of one facility's network)

Revision ID: 5a7d3c2e9f14
Revises: b8d2f4a61c35
Create Date: 2026-12-01 09:30:00
"""
from collections.abc import Sequence

from alembic import op

revision: str = '5a7d3c2e9f14'
down_revision: str | None = 'b8d2f4a61c35'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('support_session', schema=None) as batch_op:
        batch_op.create_index('ix_support_session_facility_network_scheduled',
                              ['facility_id', 'network', 'scheduled_at'], unique=False)
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.create_index('ix_escalation_facility_network_raised',
                              ['facility_id', 'network', 'raised_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('escalation', schema=None) as batch_op:
        batch_op.drop_index('ix_escalation_facility_network_raised')
    with op.batch_alter_table('support_session', schema=None) as batch_op:
        batch_op.drop_index('ix_support_session_facility_network_scheduled')
