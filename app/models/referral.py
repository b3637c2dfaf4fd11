"""Referrals: a request that a person receive peer support, from a coordinator, clinician,
officer, a peer (on someone's behalf, or the person themselves through a peer) or an
integration; its reason, urgency and the workflow received -> triaged -> matched | declined |
withdrawn, each transition stamped once. The clock from `received_at` to the first session is
the program's first measure (reports)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, model_validator
from pydantic import Field as PField
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, Network, ts_field
from app.models.participant import ExternalId


class ReferralSource(StrEnum):
    coordinator = "coordinator"
    clinician = "clinician"
    officer = "officer"
    peer = "peer"  # a peer supporter, on behalf of someone they support
    self_via_peer = "self_via_peer"  # the person asked for support, through a peer
    integration = "integration"  # JMS, EHR


class ReasonCategory(StrEnum):
    adjustment_to_custody = "adjustment_to_custody"
    emotional_distress = "emotional_distress"
    isolation = "isolation"
    grief_loss = "grief_loss"
    family_concerns = "family_concerns"
    reentry_planning = "reentry_planning"
    substance_use = "substance_use"
    conflict = "conflict"
    victimization = "victimization"
    critical_incident = "critical_incident"  # mostly the staff network
    occupational_stress = "occupational_stress"  # staff: stress, burnout, secondary trauma
    suicide_risk = "suicide_risk"
    self_harm_risk = "self_harm_risk"
    other = "other"


# A high-risk reason opens an escalation in the referral's transaction, in this category.
HIGH_RISK_REASONS: dict[str, str] = {
    ReasonCategory.suicide_risk.value: "suicide_risk",
    ReasonCategory.self_harm_risk.value: "self_harm",
}


class Urgency(StrEnum):
    routine = "routine"
    soon = "soon"
    urgent = "urgent"


# The queue's order: most urgent first (the rank is stored so a keyset can run on an index).
URGENCY_RANK: dict[str, int] = {Urgency.urgent.value: 0, Urgency.soon.value: 1,
                                Urgency.routine.value: 2}


class ReferralStatus(StrEnum):
    received = "received"
    triaged = "triaged"
    matched = "matched"
    declined = "declined"
    withdrawn = "withdrawn"


OPEN_STATUSES = ("received", "triaged")


class DeclineReason(StrEnum):
    person_declined = "person_declined"
    not_eligible = "not_eligible"
    already_supported = "already_supported"
    duplicate = "duplicate"
    no_capacity = "no_capacity"
    referred_elsewhere = "referred_elsewhere"  # e.g. clinical care rather than peer support
    released = "released"
    transferred = "transferred"
    other = "other"


class Referral(SQLModel, table=True):
    __tablename__ = "referral"
    __table_args__ = (
        # The coordinator's queue: by status, most urgent first, oldest first.
        Index("ix_referral_queue", "facility_id", "status", "urgency_rank", "received_at",
              "id"),
        # Reports: referrals per facility, network and period.
        Index("ix_referral_facility_network_received", "facility_id", "network",
              "received_at"),
        Index("ix_referral_participant_id", "participant_id"),
        Index("ix_referral_referred_by", "referred_by"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    network: str = Field(max_length=16)
    participant_id: uuid.UUID = Field(foreign_key="participant.id")
    housing_unit_id: uuid.UUID | None = Field(default=None, foreign_key="housing_unit.id")
    source: str = Field(max_length=16)
    reason_category: str = Field(max_length=32)
    urgency: str = Field(max_length=16)
    urgency_rank: int = Field(default=2)
    status: str = Field(default=ReferralStatus.received.value, max_length=16)
    # Free text from the referrer (what they saw, what the person asked for): not clinical
    # notes; never in events.
    summary: str | None = Field(default=None, max_length=2000)
    received_at: datetime = ts_field(default_now=True)
    triaged_at: datetime | None = ts_field(nullable=True)
    triaged_by: str | None = Field(default=None, max_length=64)
    matched_at: datetime | None = ts_field(nullable=True)
    matched_by: str | None = Field(default=None, max_length=64)
    matched_pairing_id: uuid.UUID | None = Field(default=None, foreign_key="pairing.id")
    matched_session_id: uuid.UUID | None = Field(default=None,
                                                 foreign_key="support_session.id")
    declined_at: datetime | None = ts_field(nullable=True)
    declined_by: str | None = Field(default=None, max_length=64)
    decline_reason: str | None = Field(default=None, max_length=32)
    decline_note: str | None = Field(default=None, max_length=500)
    withdrawn_at: datetime | None = ts_field(nullable=True)
    withdrawn_by: str | None = Field(default=None, max_length=64)
    withdraw_reason: str | None = Field(default=None, max_length=500)
    escalation_id: uuid.UUID | None = Field(default=None, foreign_key="escalation.id")
    referred_by: str = Field(max_length=64)  # the actor: `user:<id>` or `client:<id>`
    version: int = 1
    updated_at: datetime = ts_field(default_now=True, index=True)


class ReferralCreate(InputModel):
    participant_id: uuid.UUID | None = PField(
        None, description="The person referred; or `external_id` (integrations)")
    external_id: ExternalId | None = PField(
        None, description="The person by an external id (JMS person id, booking number)")
    source: ReferralSource | None = PField(
        None, description="Defaults from the caller's role; a peer supporter sends "
                          "`self_via_peer` when the person asked for support themselves")
    reason_category: ReasonCategory
    urgency: Urgency = Urgency.routine
    summary: str | None = PField(None, min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _one_person(self) -> ReferralCreate:
        if (self.participant_id is None) == (self.external_id is None):
            raise ValueError("give exactly one of participant_id and external_id")
        return self


class ReferralTriage(InputModel):
    urgency: Urgency | None = PField(None, description="Change the urgency at triage")


class ReferralMatch(InputModel):
    pairing_id: uuid.UUID | None = None
    session_id: uuid.UUID | None = PField(None, description="A group session")

    @model_validator(mode="after")
    def _one_target(self) -> ReferralMatch:
        if (self.pairing_id is None) == (self.session_id is None):
            raise ValueError("give exactly one of pairing_id and session_id")
        return self


class ReferralDecline(InputModel):
    reason: DeclineReason
    note: str | None = PField(None, min_length=1, max_length=500)


class ReferralWithdraw(InputModel):
    reason: str | None = PField(None, min_length=1, max_length=500)


class ReferralRead(BaseModel):
    id: uuid.UUID
    facility_id: uuid.UUID
    network: Network
    participant_id: uuid.UUID | None = PField(
        description="The person referred (null in a peer supporter's view of a self-referral "
                    "they passed on: they learn nothing more than they gave)")
    housing_unit_id: uuid.UUID | None = PField(
        description="The person's unit when referred (not in a peer supporter's view)")
    source: ReferralSource
    reason_category: ReasonCategory
    urgency: Urgency
    status: ReferralStatus
    summary: str | None
    received_at: datetime
    triaged_at: datetime | None
    triaged_by: str | None
    matched_at: datetime | None
    matched_by: str | None
    matched_pairing_id: uuid.UUID | None
    matched_session_id: uuid.UUID | None
    declined_at: datetime | None
    declined_by: str | None
    decline_reason: DeclineReason | None
    decline_note: str | None
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    withdraw_reason: str | None
    escalation_id: uuid.UUID | None
    referred_by: str
    version: int
    updated_at: datetime

    model_config = {"from_attributes": True}
