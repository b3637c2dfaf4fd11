"""Keep-apart orders (non-associations): two people who must not be brought together."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel, model_validator
from pydantic import Field as PField
from sqlalchemy import Index, UniqueConstraint, text
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, ts_field
from app.models.participant import Code


class KeepApartReason(StrEnum):
    threat = "threat"
    violence = "violence"
    gang = "gang"
    co_defendant = "co_defendant"
    legal = "legal"
    other = "other"


class KeepApartScope(StrEnum):
    cell = "cell"
    unit = "unit"
    facility = "facility"


class KeepApartStatus(StrEnum):
    open = "open"
    closed = "closed"


class KeepApartOrder(SQLModel, table=True):
    __tablename__ = "keep_apart_order"
    __table_args__ = (
        # One open order per pair; the pair is stored ordered (a < b).
        Index(
            "uq_keep_apart_order_open_pair", "participant_a_id", "participant_b_id",
            unique=True,
            postgresql_where=text("status = 'open'"),
            sqlite_where=text("status = 'open'"),
        ),
        UniqueConstraint("external_source", "external_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    participant_a_id: uuid.UUID = Field(foreign_key="participant.id")
    participant_b_id: uuid.UUID = Field(foreign_key="participant.id", index=True)
    reason: str = Field(max_length=32)
    scope: str = Field(max_length=16)
    authorised_by: str = Field(max_length=200)
    status: str = Field(default="open", max_length=16)
    external_source: str | None = Field(default=None, max_length=64)
    external_id: str | None = Field(default=None, max_length=128)
    opened_at: datetime = ts_field(default_now=True)
    opened_by: str = Field(max_length=64)
    status_changed_at: datetime = ts_field(default_now=True)
    status_changed_by: str = Field(max_length=64)
    status_reason: str | None = Field(default=None, max_length=500)
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True, index=True)


class KeepApartCreate(InputModel):
    participant_ids: tuple[uuid.UUID, uuid.UUID]
    reason: KeepApartReason
    scope: KeepApartScope
    authorised_by: str = PField(min_length=1, max_length=200)
    external_source: Code | None = None
    external_id: str | None = PField(None, min_length=1, max_length=128)

    @model_validator(mode="after")
    def _distinct(self) -> KeepApartCreate:
        if self.participant_ids[0] == self.participant_ids[1]:
            raise ValueError("a keep-apart order needs two different participants")
        if (self.external_source is None) != (self.external_id is None):
            raise ValueError("external_source and external_id go together")
        return self


class KeepApartImportRow(InputModel):
    """One row of a keep-apart import: an order by the JMS's own order id, between two people
    named by their external ids (of `person_source`, by default the order's source)."""

    external_source: Code
    external_id: str = PField(min_length=1, max_length=128)
    person_source: Code | None = None
    person_a: str = PField(min_length=1, max_length=128)
    person_b: str = PField(min_length=1, max_length=128)
    reason: KeepApartReason
    scope: KeepApartScope
    authorised_by: str = PField(min_length=1, max_length=200)
    status: KeepApartStatus = KeepApartStatus.open
    status_reason: str | None = PField(None, min_length=1, max_length=500)

    @model_validator(mode="after")
    def _distinct(self) -> KeepApartImportRow:
        if (self.person_source or self.external_source, self.person_a) == (
                self.person_source or self.external_source, self.person_b):
            raise ValueError("a keep-apart order needs two different participants")
        return self

    def people(self) -> tuple[tuple[str, str], tuple[str, str]]:
        source = self.person_source or self.external_source
        return (source, self.person_a), (source, self.person_b)


class KeepApartTransition(InputModel):
    reason: str = PField(min_length=1, max_length=500)


class KeepApartRead(BaseModel):
    id: uuid.UUID
    participant_ids: tuple[uuid.UUID, uuid.UUID]
    reason: KeepApartReason
    scope: KeepApartScope
    authorised_by: str
    status: KeepApartStatus
    external_source: str | None
    external_id: str | None
    opened_at: datetime
    opened_by: str
    status_changed_at: datetime
    status_changed_by: str
    status_reason: str | None
    version: int
    updated_at: datetime

    @classmethod
    def of(cls, o: KeepApartOrder) -> KeepApartRead:
        return cls(
            id=o.id, participant_ids=(o.participant_a_id, o.participant_b_id),
            reason=KeepApartReason(o.reason), scope=KeepApartScope(o.scope),
            authorised_by=o.authorised_by, status=KeepApartStatus(o.status),
            external_source=o.external_source, external_id=o.external_id,
            opened_at=o.opened_at, opened_by=o.opened_by,
            status_changed_at=o.status_changed_at, status_changed_by=o.status_changed_by,
            status_reason=o.status_reason, version=o.version, updated_at=o.updated_at,
        )


def ordered_pair(x: uuid.UUID, y: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID]:
    """Orders are stored with the pair sorted, so one unique index covers both directions."""
    return (x, y) if x < y else (y, x)
