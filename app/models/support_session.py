"""Support sessions (one-to-one within a pairing, or a group), their attendance and wellbeing,
the confidential note (encrypted at rest; never in lists, events or logs), and disclosures:
what left a confidential session, visible to the person it is about."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, model_validator
from pydantic import Field as PField
from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, Network, json_field, ts_field


class SessionKind(StrEnum):
    one_to_one = "one_to_one"
    group = "group"


class SessionStatus(StrEnum):
    scheduled = "scheduled"
    completed = "completed"
    cancelled = "cancelled"
    no_show = "no_show"


class Attendance(StrEnum):
    invited = "invited"
    attended = "attended"
    declined = "declined"
    absent = "absent"


class DisclosureCategory(StrEnum):
    suicide_risk = "suicide_risk"
    self_harm = "self_harm"
    harm_to_others = "harm_to_others"
    abuse = "abuse"
    sexual_victimization = "sexual_victimization"
    other_mandated = "other_mandated"


DEFAULT_TOPICS = ("coping", "family", "reentry_planning", "grief", "substance_use",
                  "relationships", "health", "legal_worries", "work_stress",
                  "critical_incident")


class SupportSession(SQLModel, table=True):
    __tablename__ = "support_session"
    __table_args__ = (
        Index("ix_support_session_facility_network_id", "facility_id", "network", "id"),
        Index("ix_support_session_pairing_id", "pairing_id"),
        Index("ix_support_session_scheduled_at", "scheduled_at"),
        # Reports: a month of one facility's network.
        Index("ix_support_session_facility_network_scheduled", "facility_id", "network",
              "scheduled_at"),
        Index("ix_support_session_updated_at", "updated_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    kind: str = Field(max_length=16)
    pairing_id: uuid.UUID | None = Field(default=None, foreign_key="pairing.id")
    facilitator_id: uuid.UUID | None = Field(default=None, foreign_key="participant.id",
                                             index=True)
    facilitator_user_id: uuid.UUID | None = Field(default=None, foreign_key="app_user.id")
    # facility_id, network and scheduled_at are copied onto the attendance rows
    # (SessionAttendee.of) and never change once the session is written.
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    network: str = Field(max_length=16)
    status: str = Field(default=SessionStatus.scheduled.value, max_length=16)
    scheduled_at: datetime = ts_field()
    scheduled_by: str = Field(max_length=64)
    actual_start: datetime | None = ts_field(nullable=True)
    duration_minutes: int | None = None
    location: str | None = Field(default=None, max_length=200)
    topics: list = json_field()
    closed_at: datetime | None = ts_field(nullable=True)
    closed_by: str | None = Field(default=None, max_length=64)
    close_reason: str | None = Field(default=None, max_length=500)
    # The confidential note: envelope-encrypted (app/security/notes.py), bound to this row.
    note_ciphertext: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    note_wrapped_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary))
    note_key_id: str | None = Field(default=None, max_length=64)
    note_author: str | None = Field(default=None, max_length=64)
    note_written_at: datetime | None = ts_field(nullable=True)
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class SessionAttendee(SQLModel, table=True):
    """One person on a session's list. The row carries its session's facility, network and
    scheduled time (`session_*`, copied when the row is written: `SessionAttendee.of`, the
    only way rows are made; a session's facility, network and time never change), so a month
    of one facility's attendance is an index range (the program report) rather than a join
    from every attendance row ever written."""

    __tablename__ = "session_attendee"
    __table_args__ = (
        UniqueConstraint("session_id", "participant_id"),
        Index("ix_session_attendee_session_facility_network_scheduled", "session_facility_id",
              "session_network", "session_scheduled_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    session_id: uuid.UUID = Field(foreign_key="support_session.id", index=True)
    participant_id: uuid.UUID = Field(foreign_key="participant.id", index=True)
    status: str = Field(default=Attendance.invited.value, max_length=16)
    reason: str | None = Field(default=None, max_length=500)
    wellbeing_before: int | None = None
    wellbeing_after: int | None = None
    session_facility_id: uuid.UUID
    session_network: str = Field(max_length=16)
    session_scheduled_at: datetime = ts_field()

    @classmethod
    def of(cls, s: SupportSession, participant_id: uuid.UUID, **values: Any) -> SessionAttendee:
        """`participant_id` on the list of session `s` (which has its id: flushed)."""
        return cls(session_id=s.id, participant_id=participant_id,
                   session_facility_id=s.facility_id, session_network=s.network,
                   session_scheduled_at=s.scheduled_at, **values)


class SessionTopic(SQLModel, table=True):
    __tablename__ = "session_topic"

    code: str = Field(primary_key=True, max_length=40)
    label: str = Field(max_length=200)
    active: bool = True


class Disclosure(SQLModel, table=True):
    __tablename__ = "disclosure"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    session_id: uuid.UUID = Field(foreign_key="support_session.id", index=True)
    participant_id: uuid.UUID = Field(foreign_key="participant.id", index=True)
    category: str = Field(max_length=32)
    passed_to: str = Field(max_length=200)
    passed_at: datetime = ts_field()
    recorded_by: str = Field(max_length=64)
    escalation_id: uuid.UUID | None = None  # set once crisis escalations exist
    created_at: datetime = ts_field(default_now=True)


# --- API schemas -------------------------------------------------------------------------

class SessionCreate(InputModel):
    kind: SessionKind
    scheduled_at: datetime
    pairing_id: uuid.UUID | None = PField(None, description="one_to_one: the pairing")
    facility_id: uuid.UUID | None = PField(None, description="group: where it meets")
    facilitator_id: uuid.UUID | None = PField(
        None, description="group: a certified supporter; omitted: the caller (staff) facilitates")
    location: str | None = PField(None, max_length=200)

    @model_validator(mode="after")
    def _shape(self) -> SessionCreate:
        if self.scheduled_at.tzinfo is None:
            raise ValueError("scheduled_at needs a UTC offset")
        if self.kind == SessionKind.one_to_one and self.pairing_id is None:
            raise ValueError("a one_to_one session needs pairing_id")
        if self.kind == SessionKind.group and self.facility_id is None:
            raise ValueError("a group session needs facility_id")
        if self.kind == SessionKind.one_to_one and (self.facility_id or self.facilitator_id):
            raise ValueError("a one_to_one session takes its people and facility from the pairing")
        return self


class AttendeeAdd(InputModel):
    participant_id: uuid.UUID


class Wellbeing(InputModel):
    participant_id: uuid.UUID
    before: int | None = PField(None, ge=1, le=5)
    after: int | None = PField(None, ge=1, le=5)


class AttendanceMark(InputModel):
    participant_id: uuid.UUID
    status: Attendance
    reason: str | None = PField(None, max_length=500)


class SessionComplete(InputModel):
    actual_start: datetime
    duration_minutes: int = PField(ge=1, le=600)
    location: str | None = PField(None, max_length=200)
    topics: list[str] = PField(default_factory=list, max_length=20)
    wellbeing: list[Wellbeing] = PField(default_factory=list, max_length=100)
    attendance: list[AttendanceMark] = PField(default_factory=list, max_length=100)
    note: str | None = PField(None, min_length=1, max_length=20000,
                              description="Confidential; readable only by its author and, "
                                          "through a disclosure or escalation, clinicians")

    @model_validator(mode="after")
    def _aware(self) -> SessionComplete:
        if self.actual_start.tzinfo is None:
            raise ValueError("actual_start needs a UTC offset")
        return self


class SessionClose(InputModel):
    reason: str | None = PField(None, min_length=1, max_length=500)


class AttendeeRead(BaseModel):
    participant_id: uuid.UUID
    status: Attendance
    reason: str | None
    wellbeing_before: int | None
    wellbeing_after: int | None

    model_config = {"from_attributes": True}


class SessionRead(BaseModel):
    """Never carries the note's text: only that one exists."""

    id: uuid.UUID
    kind: SessionKind
    pairing_id: uuid.UUID | None
    facilitator_id: uuid.UUID | None
    facilitator_user_id: uuid.UUID | None
    facility_id: uuid.UUID
    network: Network
    status: SessionStatus
    scheduled_at: datetime
    scheduled_by: str
    actual_start: datetime | None
    duration_minutes: int | None
    location: str | None
    topics: list[str]
    closed_at: datetime | None
    closed_by: str | None
    close_reason: str | None
    has_note: bool
    attendees: list[AttendeeRead] = PField(default_factory=list)
    version: int
    updated_at: datetime


class NoteRead(BaseModel):
    session_id: uuid.UUID
    text: str
    author: str
    written_at: datetime


class TopicCreate(InputModel):
    code: str = PField(min_length=2, max_length=40, pattern=r"^[a-z][a-z0-9_]*$")
    label: str = PField(min_length=1, max_length=200)


class TopicRead(BaseModel):
    code: str
    label: str
    active: bool

    model_config = {"from_attributes": True}


class DisclosureCreate(InputModel):
    participant_id: uuid.UUID
    category: DisclosureCategory
    passed_to: str = PField(min_length=1, max_length=200)
    passed_at: datetime

    @model_validator(mode="after")
    def _aware(self) -> DisclosureCreate:
        if self.passed_at.tzinfo is None:
            raise ValueError("passed_at needs a UTC offset")
        return self


class DisclosureRead(BaseModel):
    id: uuid.UUID
    session_id: uuid.UUID
    participant_id: uuid.UUID
    category: DisclosureCategory
    passed_to: str
    passed_at: datetime
    recorded_by: str
    escalation_id: uuid.UUID | None
    created_at: datetime

    model_config = {"from_attributes": True}


class PairingSummary(BaseModel):
    pairing_id: uuid.UUID
    sessions_held: int
    sessions_attended: int
    average_wellbeing_change: float | None
    days_to_first_session: int | None
    days_since_last_session: int | None
