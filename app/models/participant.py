"""Participants (people in the program) and their external ids from other systems."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, StringConstraints, model_validator
from pydantic import Field as PField
from sqlalchemy import Index, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, Network, json_field, ts_field


class CustodyStatus(StrEnum):
    in_custody = "in_custody"
    transferred = "transferred"
    released = "released"


class EmploymentStatus(StrEnum):
    employed = "employed"
    on_leave = "on_leave"
    separated = "separated"


class ProgramRole(StrEnum):
    supporter = "supporter"
    recipient = "recipient"


class Availability(StrEnum):
    active = "active"
    unavailable = "unavailable"
    inactive = "inactive"


class Participant(SQLModel, table=True):
    __tablename__ = "participant"
    __table_args__ = (
        Index("ix_participant_facility_network_id", "facility_id", "network", "id"),
        Index("ix_participant_updated_at", "updated_at"),
        Index("ix_participant_housing_unit_id", "housing_unit_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    network: str = Field(max_length=16)
    legal_name: str = Field(max_length=200)
    preferred_name: str | None = Field(default=None, max_length=200)
    date_of_birth: date | None = None
    languages: list = json_field()
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    housing_unit_id: uuid.UUID | None = Field(default=None, foreign_key="housing_unit.id")
    custody_status: str | None = Field(default=None, max_length=16)
    employment_status: str | None = Field(default=None, max_length=16)
    is_supporter: bool = False
    is_recipient: bool = False
    supporter_availability: str | None = Field(default=None, max_length=16)
    unavailable_until: date | None = None
    caseload_cap: int | None = None  # a supporter's own cap, below the facility's
    # Read copy of participant_external_id rows, kept in the same transaction (one-query reads).
    external_ids: list = json_field()
    archived_at: datetime | None = ts_field(nullable=True)
    merged_into_id: uuid.UUID | None = Field(default=None, foreign_key="participant.id")
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class ParticipantExternalId(SQLModel, table=True):
    """The uniqueness of (source, value) within one facility's records of one network (the
    walls a writer is scoped by) lives here; participant.external_ids mirrors it. An id held
    outside a writer's scope is, for that writer, unused: it may create a record with it in
    its own scope, so no answer tells it the id exists elsewhere. `facility_id` and `network`
    are the holder's, kept so by triggers (set on insert, the facility moved with the
    participant; migration 20261201_0400)."""

    __tablename__ = "participant_external_id"
    __table_args__ = (UniqueConstraint("source", "value", "facility_id", "network"),)

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    participant_id: uuid.UUID = Field(foreign_key="participant.id", index=True)
    source: str = Field(max_length=64)
    value: str = Field(max_length=128)
    facility_id: uuid.UUID | None = None
    network: str | None = Field(default=None, max_length=16)
    created_at: datetime = ts_field(default_now=True)


Code = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200, strip_whitespace=True)]
Language = Annotated[str, StringConstraints(min_length=2, max_length=35, pattern=r"^[A-Za-z-]+$")]


class ExternalId(InputModel):
    source: Code
    value: Annotated[str, StringConstraints(min_length=1, max_length=128)]


class _ParticipantFields(InputModel):
    legal_name: Name
    preferred_name: Name | None = None
    date_of_birth: date | None = None
    languages: list[Language] = PField(default_factory=list, max_length=20)
    facility_id: uuid.UUID | None = None
    facility_code: Code | None = None
    housing_unit_id: uuid.UUID | None = None
    housing_unit_code: Code | None = None
    custody_status: CustodyStatus | None = None
    employment_status: EmploymentStatus | None = None
    program_roles: list[ProgramRole] = PField(default_factory=list, max_length=2)
    supporter_availability: Availability | None = None
    unavailable_until: date | None = None
    caseload_cap: int | None = PField(None, ge=1, le=50)


def _check_shape(model: Any) -> Any:
    if model.facility_id is None and model.facility_code is None:
        raise ValueError("facility_id or facility_code is required")
    if model.facility_id is not None and model.facility_code is not None:
        raise ValueError("give facility_id or facility_code, not both")
    if model.housing_unit_id is not None and model.housing_unit_code is not None:
        raise ValueError("give housing_unit_id or housing_unit_code, not both")
    return model


class ParticipantCreate(_ParticipantFields):
    network: Network
    external_ids: list[ExternalId] = PField(default_factory=list, max_length=10)

    @model_validator(mode="after")
    def _shape(self) -> ParticipantCreate:
        _check_shape(self)
        if self.network == Network.incarcerated and self.employment_status is not None:
            raise ValueError("employment_status is for the staff network")
        if self.network == Network.staff and self.custody_status is not None:
            raise ValueError("custody_status is for the incarcerated network")
        return self


class ParticipantUpsert(ParticipantCreate):
    """Body of the idempotent upsert by external id (the path's id is added to external_ids)."""


class ParticipantUpdate(InputModel):
    """PATCH: only the fields sent change; a required field cannot be set to null."""

    legal_name: Name | None = None
    preferred_name: Name | None = None
    date_of_birth: date | None = None
    languages: list[Language] | None = PField(None, max_length=20)
    facility_id: uuid.UUID | None = None
    facility_code: Code | None = None
    housing_unit_id: uuid.UUID | None = None
    housing_unit_code: Code | None = None
    custody_status: CustodyStatus | None = None
    employment_status: EmploymentStatus | None = None
    program_roles: list[ProgramRole] | None = PField(None, max_length=2)
    supporter_availability: Availability | None = None
    unavailable_until: date | None = None
    caseload_cap: int | None = PField(None, ge=1, le=50)

    @model_validator(mode="after")
    def _nulls(self) -> ParticipantUpdate:
        return _no_explicit_nulls(self)  # type: ignore[no-any-return]


_NOT_NULL = ("legal_name", "languages", "program_roles", "facility_id", "facility_code")


def _no_explicit_nulls(model: Any) -> Any:
    nulls = [f for f in _NOT_NULL if f in model.model_fields_set and getattr(model, f) is None]
    if nulls:
        raise ValueError(f"{', '.join(nulls)} cannot be null")
    return model



class MergeRequest(InputModel):
    duplicate_id: uuid.UUID


class ExternalIdRead(BaseModel):
    source: str
    value: str


class ParticipantRead(BaseModel):
    id: uuid.UUID
    network: Network
    legal_name: str
    preferred_name: str | None
    date_of_birth: date | None
    languages: list[str]
    facility_id: uuid.UUID
    housing_unit_id: uuid.UUID | None
    custody_status: CustodyStatus | None
    employment_status: EmploymentStatus | None
    program_roles: list[ProgramRole]
    supporter_availability: Availability | None
    unavailable_until: date | None
    caseload_cap: int | None
    external_ids: list[ExternalIdRead]
    archived: bool
    merged_into_id: uuid.UUID | None
    version: int
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, p: Participant) -> ParticipantRead:
        roles = [r for r, on in ((ProgramRole.supporter, p.is_supporter),
                                 (ProgramRole.recipient, p.is_recipient)) if on]
        return cls(
            id=p.id, network=Network(p.network), legal_name=p.legal_name,
            preferred_name=p.preferred_name, date_of_birth=p.date_of_birth,
            languages=list(p.languages or []), facility_id=p.facility_id,
            housing_unit_id=p.housing_unit_id,
            custody_status=p.custody_status, employment_status=p.employment_status,
            program_roles=roles, supporter_availability=p.supporter_availability,
            unavailable_until=p.unavailable_until, caseload_cap=p.caseload_cap,
            external_ids=[ExternalIdRead(**e) for e in (p.external_ids or [])],
            archived=p.archived_at is not None, merged_into_id=p.merged_into_id,
            version=p.version, created_at=p.created_at, updated_at=p.updated_at,
        )
