"""Training: courses, enrollments (a workflow), code-of-conduct signatures. Certification is
derived from these (app/services/certification.py), never typed in."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import Index, text
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, Network, ts_field


class EnrollmentStatus(StrEnum):
    enrolled = "enrolled"
    in_progress = "in_progress"
    completed = "completed"
    withdrawn = "withdrawn"
    failed = "failed"


OPEN_ENROLLMENT = (EnrollmentStatus.enrolled.value, EnrollmentStatus.in_progress.value)


class Course(SQLModel, table=True):
    __tablename__ = "course"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    title: str = Field(max_length=200)
    description: str = Field(default="", max_length=4000)
    hours: float
    network: str | None = Field(default=None, max_length=16)  # None: both networks
    required_for_certification: bool = False
    refresher: bool = False
    active: bool = True
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class Enrollment(SQLModel, table=True):
    __tablename__ = "enrollment"
    __table_args__ = (
        # One open enrollment per participant and course.
        Index("uq_enrollment_open", "participant_id", "course_id", unique=True,
              postgresql_where=text("status IN ('enrolled', 'in_progress')"),
              sqlite_where=text("status IN ('enrolled', 'in_progress')")),
        Index("ix_enrollment_course_id", "course_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    participant_id: uuid.UUID = Field(foreign_key="participant.id", index=True)
    course_id: uuid.UUID = Field(foreign_key="course.id")
    status: str = Field(default=EnrollmentStatus.enrolled.value, max_length=16)
    score: float | None = None
    enrolled_at: datetime = ts_field(default_now=True)
    enrolled_by: str = Field(max_length=64)
    started_at: datetime | None = ts_field(nullable=True)
    started_by: str | None = Field(default=None, max_length=64)
    completed_at: datetime | None = ts_field(nullable=True)
    completed_by: str | None = Field(default=None, max_length=64)
    ended_at: datetime | None = ts_field(nullable=True)
    ended_by: str | None = Field(default=None, max_length=64)
    end_reason: str | None = Field(default=None, max_length=500)
    version: int = 1
    updated_at: datetime = ts_field(default_now=True)


class ConductSignature(SQLModel, table=True):
    __tablename__ = "conduct_signature"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    participant_id: uuid.UUID = Field(foreign_key="participant.id", index=True)
    conduct_version: str = Field(max_length=32)
    signed_on: date
    witnessed_by: str = Field(max_length=64)
    witness_name: str | None = Field(default=None, max_length=200)
    recorded_at: datetime = ts_field(default_now=True)


# --- API schemas -------------------------------------------------------------------------

class CourseCreate(InputModel):
    title: str = PField(min_length=1, max_length=200)
    description: str = PField("", max_length=4000)
    hours: float = PField(gt=0, le=1000)
    network: Network | None = PField(None, description="Omit for courses of both networks")
    required_for_certification: bool = False
    refresher: bool = False


class CourseUpdate(InputModel):
    title: str | None = PField(None, min_length=1, max_length=200)
    description: str | None = PField(None, max_length=4000)
    hours: float | None = PField(None, gt=0, le=1000)
    required_for_certification: bool | None = None
    refresher: bool | None = None


class CourseRead(BaseModel):
    id: uuid.UUID
    title: str
    description: str
    hours: float
    network: Network | None
    required_for_certification: bool
    refresher: bool
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime

    model_config = {"from_attributes": True}


class EnrollmentCreate(InputModel):
    participant_id: uuid.UUID
    course_id: uuid.UUID


class EnrollmentComplete(InputModel):
    score: float | None = PField(None, ge=0, le=100)


class EnrollmentEnd(InputModel):
    reason: str | None = PField(None, min_length=1, max_length=500)


class EnrollmentRead(BaseModel):
    id: uuid.UUID
    participant_id: uuid.UUID
    course_id: uuid.UUID
    status: EnrollmentStatus
    score: float | None
    enrolled_at: datetime
    enrolled_by: str
    started_at: datetime | None
    started_by: str | None
    completed_at: datetime | None
    completed_by: str | None
    ended_at: datetime | None
    ended_by: str | None
    end_reason: str | None
    version: int
    updated_at: datetime

    model_config = {"from_attributes": True}


class ConductSign(InputModel):
    conduct_version: str = PField(min_length=1, max_length=32)
    signed_on: date | None = PField(None, description="Defaults to today (UTC)")
    witness_name: str | None = PField(None, min_length=1, max_length=200)


class ConductSignatureRead(BaseModel):
    id: uuid.UUID
    participant_id: uuid.UUID
    conduct_version: str
    signed_on: date
    witnessed_by: str
    witness_name: str | None
    recorded_at: datetime

    model_config = {"from_attributes": True}


class MissingCourse(BaseModel):
    id: uuid.UUID
    title: str


class CertificationMissing(BaseModel):
    courses: list[MissingCourse]
    code_of_conduct: bool = PField(description="True when the code of conduct is unsigned")
    expired: bool
    refresher_hours: float = PField(description="Refresher hours still needed to renew")


class CertificationRead(BaseModel):
    participant_id: uuid.UUID
    certified: bool
    since: date | None = PField(description="Start of the current (or last) validity period")
    until: date | None
    missing: CertificationMissing


class ExpiringCertificate(BaseModel):
    participant_id: uuid.UUID
    facility_id: uuid.UUID
    until: date
