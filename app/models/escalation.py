"""Crisis escalations: someone is at risk now. Risk tier (given, or derived from the C-SSRS
screener), acknowledgement deadline per facility and tier, breaches that climb the
facility's escalation chain, and a timeline of everything that happened."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Literal

from pydantic import BaseModel, model_validator
from pydantic import Field as PField
from sqlalchemy import Index
from sqlmodel import Field, SQLModel
from typing_extensions import TypeAliasType

from app.db import uuid7
from app.models.common import InputModel, Network, json_field, ts_field
from app.models.participant import ExternalId, ExternalIdRead


class Tier(StrEnum):
    low = "low"
    moderate = "moderate"
    high = "high"
    imminent = "imminent"


TIER_ORDER = {Tier.low: 0, Tier.moderate: 1, Tier.high: 2, Tier.imminent: 3}


class Category(StrEnum):
    suicide_risk = "suicide_risk"
    self_harm = "self_harm"
    violence_threat = "violence_threat"
    mental_health_crisis = "mental_health_crisis"
    victimization = "victimization"
    medical = "medical"


class EscalationStatus(StrEnum):
    open = "open"
    acknowledged = "acknowledged"
    resolved = "resolved"
    reopened = "reopened"


WAITING = ("open", "reopened")  # the acknowledgement clock runs in these
# Written as a list, not "!= resolved", so the status index serves the query.
UNRESOLVED = ("open", "acknowledged", "reopened")


class Escalation(SQLModel, table=True):
    __tablename__ = "escalation"
    __table_args__ = (
        Index("ix_escalation_status_deadline", "status", "ack_deadline"),
        Index("ix_escalation_facility_network_id", "facility_id", "network", "id"),
        Index("ix_escalation_participant_id", "participant_id"),
        Index("ix_escalation_raised_by", "raised_by"),
        # Reports: a month of one facility's network.
        Index("ix_escalation_facility_network_raised", "facility_id", "network", "raised_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    # The person at risk; None while only the place is known (raised about a place, or the
    # identifier given matched nobody) until a coordinator or clinician links them.
    participant_id: uuid.UUID | None = Field(default=None, foreign_key="participant.id")
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    network: str = Field(max_length=16)
    category: str = Field(max_length=32)
    description: str = Field(max_length=4000)  # clinical detail: clinicians only
    location_unit_id: uuid.UUID | None = Field(default=None, foreign_key="housing_unit.id")
    location_text: str | None = Field(default=None, max_length=200)
    tier: str = Field(max_length=16)
    screener: dict | None = json_field(default_factory=lambda: None, nullable=True)
    status: str = Field(default=EscalationStatus.open.value, max_length=16)
    ack_deadline: datetime = ts_field()
    breached: bool = False
    chain_level: int = 0
    assigned_to: uuid.UUID | None = Field(default=None, foreign_key="app_user.id")
    raised_by: str = Field(max_length=64)
    raised_at: datetime = ts_field(default_now=True)
    # The raiser did not name a person they can see: they hold a receipt of it (views.py), never
    # what the server found or was linked later (scoping.escalation_wall).
    raised_blind: bool = False
    # What the raiser gave about the person and the place, as given (EscalationReport).
    reported: dict | None = json_field(default_factory=lambda: None, nullable=True)
    acknowledged_at: datetime | None = ts_field(nullable=True)
    acknowledged_by: str | None = Field(default=None, max_length=64)
    resolved_at: datetime | None = ts_field(nullable=True)
    resolved_by: str | None = Field(default=None, max_length=64)
    outcome: str | None = Field(default=None, max_length=2000)
    follow_up_plan: str | None = Field(default=None, max_length=4000)
    review_date: date | None = None
    watch_missed_at: datetime | None = ts_field(nullable=True)  # last observation.missed sent
    version: int = 1
    updated_at: datetime = ts_field(default_now=True)


class EscalationEvent(SQLModel, table=True):
    """The timeline: every transition, tier change, assignment and breach, in order."""

    __tablename__ = "escalation_event"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    escalation_id: uuid.UUID = Field(foreign_key="escalation.id", index=True)
    kind: str = Field(max_length=32)
    at: datetime = ts_field(default_now=True)
    by: str = Field(max_length=64)
    detail: dict = json_field(default_factory=dict)


# Staff observation cadence per tier, in minutes (None: no required cadence).
CADENCE_MINUTES = {"imminent": 5, "high": 15, "moderate": 30, "low": None}


class Observation(SQLModel, table=True):
    """The watch log. Peer observations are recorded, but never count toward the staff
    cadence."""

    __tablename__ = "escalation_observation"
    __table_args__ = (Index("ix_escalation_observation_escalation_at", "escalation_id",
                            "observed_at"),)

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    escalation_id: uuid.UUID = Field(foreign_key="escalation.id")
    observed_at: datetime = ts_field()
    recorded_by: str = Field(max_length=64)
    observer_kind: str = Field(max_length=8)  # staff | peer
    seen: str = Field(max_length=2000)
    recorded_at: datetime = ts_field(default_now=True)  # server time, when it was written
    # Written more than `observation_late_minutes` after the observation: shown as late, never
    # counted toward the staff cadence. Decided once, when the entry is written.
    late: bool = False


class ObservationCreate(InputModel):
    observed_at: datetime
    seen: str = PField(min_length=1, max_length=2000)

    @model_validator(mode="after")
    def _aware(self) -> ObservationCreate:
        if self.observed_at.tzinfo is None:
            raise ValueError("observed_at needs a UTC offset")
        return self


class ObservationRead(BaseModel):
    id: uuid.UUID
    observed_at: datetime = PField(description="When the person was seen (as the observer "
                                               "says)")
    recorded_by: str = PField(description="Who wrote the entry (`user:<id>`)")
    observer_kind: str
    seen: str
    recorded_at: datetime = PField(description="When the entry was written (server time)")
    late: bool = PField(description="Written more than the late threshold (default 15 minutes) "
                                    "after `observed_at`: it is shown, but never counts toward "
                                    "the staff cadence")

    model_config = {"from_attributes": True}


class WatchGap(BaseModel):
    start: datetime
    end: datetime
    minutes: int
    late_observations: list[uuid.UUID] = PField(
        default_factory=list, description="Staff observations dated inside the gap but written "
                                          "late: shown here, they do not close the gap")


class WatchLog(BaseModel):
    escalation_id: uuid.UUID
    cadence_minutes: int | None
    observations: list[ObservationRead]
    gaps: list[WatchGap] = PField(description="Intervals without a STAFF observation written "
                                              "on time longer than the cadence; peer "
                                              "observations and late entries never close one")


class Screener(InputModel):
    """C-SSRS screener: six yes/no questions and the timing of suicidal behaviour."""

    wish_to_be_dead: bool
    suicidal_thoughts: bool
    thoughts_with_method: bool = PField(description="Q3; asked when Q2 is yes")
    intent: bool = PField(description="Q4: some intention of acting on the thoughts")
    plan: bool = PField(description="Q5: worked out details, intends to carry it out")
    behavior: bool = PField(description="Q6: ever done, started or prepared anything")
    behavior_within_3_months: bool = False


class EscalationCreate(InputModel):
    """About a person (by `participant_id`, or `external_id` such as a booking number: one at
    most), or only a place when the person is unknown. The place is `facility_id` (one of the
    raiser's facilities; implied by `location_unit_id`, or the raiser's only facility, when not
    given), a housing unit of it and free text such as a cell."""

    participant_id: uuid.UUID | None = None
    external_id: ExternalId | None = PField(None, description="Another system's id for the "
                                                               "person, e.g. a booking number")
    facility_id: uuid.UUID | None = PField(None, description="Where the risk was seen")
    category: Category
    description: str = PField(min_length=1, max_length=4000)
    location_unit_id: uuid.UUID | None = None
    location_text: str | None = PField(None, max_length=200)
    tier: Tier | None = None
    screener: Screener | None = None

    @model_validator(mode="after")
    def _one_of(self) -> EscalationCreate:
        if (self.tier is None) == (self.screener is None):
            raise ValueError("give either tier or screener answers")
        if self.participant_id is not None and self.external_id is not None:
            raise ValueError("identify the person by participant_id or external_id, not both")
        return self


class SubjectLink(InputModel):
    participant_id: uuid.UUID = PField(description="A person the caller can see: the facility "
                                                   "and network of the escalation follow them")


class Acknowledge(InputModel):
    note: str | None = PField(None, max_length=500)


class Resolve(InputModel):
    outcome: str = PField(min_length=1, max_length=2000)
    follow_up_plan: str | None = PField(None, min_length=1, max_length=4000)
    review_date: date | None = None


class Assign(InputModel):
    user_id: uuid.UUID = PField(description="A clinician or coordinator who covers the facility")


class Reopen(InputModel):
    reason: str = PField(min_length=1, max_length=500)


class TierChange(InputModel):
    tier: Tier
    reason: str = PField(min_length=1, max_length=500)


class EscalationReport(BaseModel):
    """What the raiser gave about the person and the place, as given."""

    participant_id: uuid.UUID | None = None
    external_id: ExternalIdRead | None = None
    facility_id: uuid.UUID | None = None
    location_unit_id: uuid.UUID | None = None
    location_text: str | None = None


# The role-shaped answers carry which shape they are: the discriminator of EscalationView.
_VIEW = ("Which shape of escalation this is, by the caller's role: `full` (EscalationRead), "
         "`status` (EscalationStatusView), `receipt` (EscalationReceipt)")


class EscalationRead(BaseModel):
    """An escalation as those who work it or watch over it see it: everything for clinicians,
    without the clinical detail for the others."""

    model_config = {"json_schema_serialization_defaults_required": True}

    view: Literal["full"] = PField("full", description=_VIEW)
    id: uuid.UUID
    participant_id: uuid.UUID | None = PField(description=(
        "The person at risk; null while only the place is known (raised about a place, or the "
        "identifier given matched nobody) until a coordinator or clinician links them"))
    facility_id: uuid.UUID
    network: Network
    category: Category
    description: str | None
    location_unit_id: uuid.UUID | None
    location_text: str | None
    tier: Tier
    screener: dict | None
    status: EscalationStatus
    ack_deadline: datetime = PField(description="The current acknowledgement deadline: after a "
                                                "breach, the next level's")
    seconds_remaining: int | None = PField(description=(
        "Seconds to the current acknowledgement deadline (rounded up) while the escalation waits "
        "for acknowledgement (open or reopened): zero or negative once it has passed; null once "
        "acknowledged or resolved"))
    breached: bool = PField(description=(
        "The current acknowledgement deadline has passed unacknowledged: exactly "
        "`seconds_remaining` is not null and <= 0. When the worker moves a breached escalation "
        "up the chain it gets the next level's deadline, and this is false again until that one "
        "passes; past breaches are counted by `chain_level`"))
    chain_level: int = PField(description=(
        "How many acknowledgement deadlines have passed unacknowledged since the escalation was "
        "raised or last reopened: each breach moves it one level up the facility's escalation "
        "chain (0: no breach)"))
    assigned_to: uuid.UUID | None
    raised_by: str
    raised_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    resolved_at: datetime | None
    resolved_by: str | None
    outcome: str | None
    follow_up_plan: str | None
    review_date: date | None
    version: int
    reported: EscalationReport | None = PField(None, description=(
        "What the raiser gave about the person and the place, as given (null for escalations "
        "raised before 1.9.0)"))


class EscalationReceipt(BaseModel):
    """What the raiser of a blind raise (one that named no person they can see) holds: no more
    than they gave. The same whether the server found the person, someone they cannot see, or
    nobody, and whoever is linked later."""

    model_config = {"json_schema_serialization_defaults_required": True}

    view: Literal["receipt"] = PField("receipt", description=_VIEW)
    id: uuid.UUID
    status: EscalationStatus
    raised_at: datetime
    ack_deadline: datetime = PField(description="The current acknowledgement deadline")
    category: Category
    reported: EscalationReport


class EscalationStatusView(BaseModel):
    """What a peer supporter (for the ones they raised) and an integration client see."""

    model_config = {"json_schema_serialization_defaults_required": True}

    view: Literal["status"] = PField("status", description=_VIEW)
    id: uuid.UUID
    status: EscalationStatus
    raised_at: datetime


class TimelineEntry(BaseModel):
    kind: str
    at: datetime
    by: str = PField(description="The actor's stable id: `user:<id>`, `client:<id>`, or "
                                 "`system` (the worker)")
    by_name: str | None = PField(None, description="The actor's display name: a user's "
                                                   "username, an API client's name, `system`")
    detail: dict = PField(description=(
        "What the entry records, by kind: `acknowledged` {note}, `resolved` {outcome, "
        "follow_up_plan, review_date}, `reopened` {reason}, `tier_changed` {from, to, reason}, "
        "`breached` {level, notify}, `assigned` {user_id}, `observation` {observer_kind, late}. "
        "Free text (note, outcome, follow_up_plan, review_date, reason) is clinical: its value "
        "is null for callers who are not clinicians"))

    model_config = {"from_attributes": True}


# What the escalation routes answer: the caller's shape, told apart by `view`.
EscalationView = TypeAliasType("EscalationView", Annotated[
    EscalationRead | EscalationStatusView | EscalationReceipt, PField(discriminator="view")])
