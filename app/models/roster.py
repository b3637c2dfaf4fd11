"""On-call rosters: per facility and network, who holds each level of the facility's escalation
chain and when. Recurring shifts (local wall time in the facility's timezone) and overrides
(UTC windows that replace the level's shift holders); the resolution is
`services.rosters.resolution.holders`."""

from __future__ import annotations

import uuid
from datetime import date, datetime, time
from enum import StrEnum

from pydantic import BaseModel, field_validator, model_validator
from pydantic import Field as PField
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, Network, json_field, ts_field

LEVEL_NAME = PField(min_length=1, max_length=64, pattern=r"^[a-z0-9_]+$",
                    description="A level of the facility's escalation chain "
                                "(settings.escalation_chain), e.g. on_call_clinician")
MAX_SHIFT_MINUTES = 7 * 24 * 60
# An override covers at most this long (a longer change is a new shift).
MAX_OVERRIDE_DAYS = 31


class Weekday(StrEnum):
    mon = "mon"
    tue = "tue"
    wed = "wed"
    thu = "thu"
    fri = "fri"
    sat = "sat"
    sun = "sun"


class OverrideStatus(StrEnum):
    active = "active"
    cancelled = "cancelled"


class OnCallShift(SQLModel, table=True):
    __tablename__ = "on_call_shift"
    __table_args__ = (
        Index("ix_on_call_shift_facility_network_level", "facility_id", "network", "level"),
        Index("ix_on_call_shift_user_id", "user_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    network: str = Field(max_length=16)
    level: str = Field(max_length=64)
    user_id: uuid.UUID = Field(foreign_key="app_user.id")
    weekdays: list = json_field()
    start_time: time
    duration_minutes: int
    valid_from: date
    valid_until: date | None = None
    created_by: str = Field(max_length=64)
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class OnCallOverride(SQLModel, table=True):
    __tablename__ = "on_call_override"
    __table_args__ = (
        Index("ix_on_call_override_facility_network_ends", "facility_id", "network", "ends_at"),
        Index("ix_on_call_override_user_id", "user_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    network: str = Field(max_length=16)
    level: str = Field(max_length=64)
    user_id: uuid.UUID = Field(foreign_key="app_user.id")
    starts_at: datetime = ts_field()
    ends_at: datetime = ts_field()
    reason: str | None = Field(default=None, max_length=200)
    status: str = Field(default=OverrideStatus.active.value, max_length=16)
    cancelled_at: datetime | None = ts_field(nullable=True)
    cancelled_by: str | None = Field(default=None, max_length=64)
    created_by: str = Field(max_length=64)
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


# --- API schemas -----------------------------------------------------------------------------

def _wall_time(value: time | None) -> time | None:
    if value is not None and (value.tzinfo is not None or value.second or value.microsecond):
        raise ValueError("a local wall time as HH:MM, without an offset")
    return value


def _days(value: list[Weekday] | None) -> list[Weekday] | None:
    if value is not None and len(set(value)) != len(value):
        raise ValueError("each weekday once")
    return value


class ShiftCreate(InputModel):
    facility_id: uuid.UUID
    network: Network
    level: str = LEVEL_NAME
    user_id: uuid.UUID = PField(description="Who holds the level: an active account whose role "
                                            "and facilities fit (see the README)")
    weekdays: list[Weekday] = PField(min_length=1, max_length=7,
                                     description="Local weekdays on which the shift starts")
    start_time: time = PField(description="Local wall time in the facility's timezone (HH:MM)")
    duration_minutes: int = PField(ge=1, le=MAX_SHIFT_MINUTES,
                                   description="Wall-clock length: the shift ends at the local "
                                               "time start + duration, also on DST nights")
    valid_from: date = PField(description="First local date a shift may start on")
    valid_until: date | None = PField(None, description="Last local date a shift may start on "
                                                        "(inclusive); null: open-ended")

    _t = field_validator("start_time")(_wall_time)
    _d = field_validator("weekdays")(_days)

    @model_validator(mode="after")
    def _range(self) -> ShiftCreate:
        if self.valid_until is not None and self.valid_until < self.valid_from:
            raise ValueError("valid_until is before valid_from")
        return self


class ShiftUpdate(InputModel):
    """Change a shift (e.g. end it: `valid_until`); the same rules as a new one."""

    user_id: uuid.UUID | None = None
    weekdays: list[Weekday] | None = PField(None, min_length=1, max_length=7)
    start_time: time | None = None
    duration_minutes: int | None = PField(None, ge=1, le=MAX_SHIFT_MINUTES)
    valid_from: date | None = None
    valid_until: date | None = None

    _t = field_validator("start_time")(_wall_time)
    _d = field_validator("weekdays")(_days)


class ShiftRead(BaseModel):
    id: uuid.UUID
    facility_id: uuid.UUID
    network: Network
    level: str
    user_id: uuid.UUID
    weekdays: list[Weekday]
    start_time: time
    duration_minutes: int
    valid_from: date
    valid_until: date | None
    created_by: str
    version: int
    created_at: datetime
    updated_at: datetime

    model_config = {"from_attributes": True}


class OverrideCreate(InputModel):
    facility_id: uuid.UUID
    network: Network
    level: str = LEVEL_NAME
    user_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    reason: str | None = PField(None, max_length=200,
                                description="Why (cover, swap); never clinical detail")

    @model_validator(mode="after")
    def _window(self) -> OverrideCreate:
        if self.starts_at.tzinfo is None or self.ends_at.tzinfo is None:
            raise ValueError("starts_at and ends_at need a UTC offset")
        if self.ends_at <= self.starts_at:
            raise ValueError("ends_at must be after starts_at")
        if (self.ends_at - self.starts_at).days >= MAX_OVERRIDE_DAYS:
            raise ValueError(f"an override covers less than {MAX_OVERRIDE_DAYS} days")
        return self


class OverrideRead(BaseModel):
    id: uuid.UUID
    facility_id: uuid.UUID
    network: Network
    level: str
    user_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime
    reason: str | None
    status: OverrideStatus
    cancelled_at: datetime | None
    cancelled_by: str | None
    created_by: str
    version: int
    created_at: datetime

    model_config = {"from_attributes": True}


class OnCallPerson(BaseModel):
    user_id: uuid.UUID
    display_name: str
    source: str = PField(description="shift or override")
    source_id: uuid.UUID
    since: datetime
    until: datetime


class OnCallLevel(BaseModel):
    level: int = PField(description="1 = the chain's first level")
    name: str
    staffed: bool
    people: list[OnCallPerson]


class OnCallRead(BaseModel):
    facility_id: uuid.UUID
    network: Network
    at: datetime
    timezone: str
    levels: list[OnCallLevel]
    unstaffed: list[str] = PField(description="The chain's levels with nobody on call: each is "
                                              "an alert")
