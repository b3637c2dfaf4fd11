"""Facilities, their housing units and their per-facility settings."""

from __future__ import annotations

import uuid
from datetime import datetime
from zoneinfo import available_timezones

from pydantic import BaseModel, field_validator
from pydantic import Field as PField
from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, json_field, ts_field

DEFAULT_ACK_MINUTES = {"imminent": 5, "high": 15, "moderate": 60, "low": 1440}


class FacilitySettings(BaseModel):
    caseload_cap: int = PField(5, ge=1, le=50)
    group_size_limit: int = PField(12, ge=2, le=100)
    escalation_chain: list[str] = PField(
        default_factory=lambda: ["on_call_clinician", "duty_supervisor", "facility_commander"],
        min_length=1, max_length=10,
        description="Who a breached escalation goes to next, in order")
    ack_minutes: dict[str, int] = PField(default_factory=lambda: dict(DEFAULT_ACK_MINUTES))

    model_config = {"extra": "forbid"}

    @field_validator("ack_minutes")
    @classmethod
    def _tiers(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(DEFAULT_ACK_MINUTES)
        if unknown:
            raise ValueError(f"unknown risk tier(s): {', '.join(sorted(unknown))}")
        if any(v < 1 or v > 7 * 1440 for v in value.values()):
            raise ValueError("acknowledgement minutes must be between 1 and 10080")
        return {**DEFAULT_ACK_MINUTES, **value}


class Facility(SQLModel, table=True):
    __tablename__ = "facility"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    code: str = Field(max_length=32, unique=True)
    name: str = Field(max_length=200)
    timezone: str = Field(max_length=64)
    settings: dict = json_field(default_factory=lambda: FacilitySettings().model_dump())
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class HousingUnit(SQLModel, table=True):
    __tablename__ = "housing_unit"
    __table_args__ = (UniqueConstraint("facility_id", "code"),)

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    facility_id: uuid.UUID = Field(foreign_key="facility.id", index=True)
    code: str = Field(max_length=32)
    name: str = Field(max_length=200)
    active: bool = True
    created_at: datetime = ts_field(default_now=True)


def _check_tz(value: str) -> str:
    if value not in _TIMEZONES:
        raise ValueError("unknown IANA timezone")
    return value


_TIMEZONES = available_timezones()


class FacilityCreate(InputModel):
    code: str = PField(min_length=1, max_length=32, pattern=r"^[A-Z0-9_-]+$")
    name: str = PField(min_length=1, max_length=200)
    timezone: str = PField(max_length=64)
    settings: FacilitySettings = PField(default_factory=FacilitySettings)

    _tz = field_validator("timezone")(_check_tz)


class FacilityUpdate(InputModel):
    name: str | None = PField(None, min_length=1, max_length=200)
    timezone: str | None = PField(None, max_length=64)
    settings: FacilitySettings | None = None

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str | None) -> str | None:
        return None if value is None else _check_tz(value)


class FacilityRead(BaseModel):
    id: uuid.UUID
    code: str
    name: str
    timezone: str
    settings: FacilitySettings
    version: int
    created_at: datetime
    updated_at: datetime

    model_config = {"from_attributes": True}


class HousingUnitCreate(InputModel):
    code: str = PField(min_length=1, max_length=32)
    name: str = PField(min_length=1, max_length=200)


class HousingUnitRead(BaseModel):
    id: uuid.UUID
    facility_id: uuid.UUID
    code: str
    name: str
    active: bool

    model_config = {"from_attributes": True}
