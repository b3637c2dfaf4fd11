"""referrals: a request that a person receive peer support, its source, reason, urgency and
workflow (received -> triaged -> matched | declined | withdrawn), indexed for the
coordinator's queue and for reports by facility, network and period

Revision ID: b8d2f4a61c35
Revises: 3f9a6c1d2e70
Create Date: 2026-12-01 03:25:00
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

import app.db  # noqa: F401

revision: str = 'b8d2f4a61c35'
down_revision: str | None = '3f9a6c1d2e70'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('referral',
    sa.Column('id', sa.Uuid(), nullable=False),
    sa.Column('facility_id', sa.Uuid(), nullable=False),
    sa.Column('network', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('participant_id', sa.Uuid(), nullable=False),
    sa.Column('housing_unit_id', sa.Uuid(), nullable=True),
    sa.Column('source', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('reason_category', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('urgency', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('urgency_rank', sa.Integer(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('summary', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('received_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.Column('triaged_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('triaged_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('matched_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('matched_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('matched_pairing_id', sa.Uuid(), nullable=True),
    sa.Column('matched_session_id', sa.Uuid(), nullable=True),
    sa.Column('declined_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('declined_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('decline_reason', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('decline_note', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('withdrawn_at', app.db.UTCDateTime(timezone=True), nullable=True),
    sa.Column('withdrawn_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('withdraw_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('escalation_id', sa.Uuid(), nullable=True),
    sa.Column('referred_by', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('updated_at', app.db.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['escalation_id'], ['escalation.id'], name=op.f('fk_referral_escalation_id_escalation')),
    sa.ForeignKeyConstraint(['facility_id'], ['facility.id'], name=op.f('fk_referral_facility_id_facility')),
    sa.ForeignKeyConstraint(['housing_unit_id'], ['housing_unit.id'], name=op.f('fk_referral_housing_unit_id_housing_unit')),
    sa.ForeignKeyConstraint(['matched_pairing_id'], ['pairing.id'], name=op.f('fk_referral_matched_pairing_id_pairing')),
    sa.ForeignKeyConstraint(['matched_session_id'], ['support_session.id'], name=op.f('fk_referral_matched_session_id_support_session')),
    sa.ForeignKeyConstraint(['participant_id'], ['participant.id'], name=op.f('fk_referral_participant_id_participant')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_referral'))
    )
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.create_index('ix_referral_facility_network_received', ['facility_id', 'network', 'received_at'], unique=False)
        batch_op.create_index('ix_referral_participant_id', ['participant_id'], unique=False)
        batch_op.create_index('ix_referral_queue', ['facility_id', 'status', 'urgency_rank', 'received_at', 'id'], unique=False)
        batch_op.create_index('ix_referral_referred_by', ['referred_by'], unique=False)
        batch_op.create_index(batch_op.f('ix_referral_updated_at'), ['updated_at'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('referral', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_referral_updated_at'))
        batch_op.drop_index('ix_referral_referred_by')
        batch_op.drop_index('ix_referral_queue')
        batch_op.drop_index('ix_referral_participant_id')
        batch_op.drop_index('ix_referral_facility_network_received')

    op.drop_table('referral')
