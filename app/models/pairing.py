"""Pairings: a certified supporter matched with a recipient, and every transition they went
through (who, when, why)."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, field_validator
from pydantic import Field as PField
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, Network, ts_field


class PairingStatus(StrEnum):
    proposed = "proposed"
    active = "active"
    paused = "paused"
    ended = "ended"


class EndReason(StrEnum):
    completed = "completed"
    recipient_request = "recipient_request"
    supporter_request = "supporter_request"
    boundary_concern = "boundary_concern"
    released = "released"
    transferred = "transferred"
    certification_lapsed = "certification_lapsed"
    keep_apart = "keep_apart"
    other = "other"


class PauseReason(StrEnum):
    """Why a pairing is paused. The system pauses for the first four; `requested`: a person
    paused it (their words, if any, in `pause_note`); `not_possible`: what a caller who may not
    know of a keep-apart order reads instead of `keep_apart`."""

    requested = "requested"
    supporter_unavailable = "supporter_unavailable"
    not_employed = "not_employed"
    certification_lapsed = "certification_lapsed"
    keep_apart = "keep_apart"
    not_possible = "not_possible"


_PAUSE_REASONS = frozenset(r.value for r in PauseReason)


def pause_note(stored: str | None) -> str | None:
    """The words of a person's pause (stored in `pause_reason` as given), or None for a
    system pause."""
    return None if stored is None or stored in _PAUSE_REASONS else stored


# What counts against a supporter's caseload and a recipient's one-active-pairing rule.
HOLDING = ("active", "paused")


class Pairing(SQLModel, table=True):
    __tablename__ = "pairing"
    __table_args__ = (
        Index("ix_pairing_supporter_status", "supporter_id", "status"),
        Index("ix_pairing_recipient_status", "recipient_id", "status"),
        Index("ix_pairing_facility_network_id", "facility_id", "network", "id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    supporter_id: uuid.UUID = Field(foreign_key="participant.id")
    recipient_id: uuid.UUID = Field(foreign_key="participant.id")
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    network: str = Field(max_length=16)
    status: str = Field(default=PairingStatus.proposed.value, max_length=16)
    override_reason: str | None = Field(default=None, max_length=500)
    proposed_at: datetime = ts_field(default_now=True)
    proposed_by: str = Field(max_length=64)
    activated_at: datetime | None = ts_field(nullable=True)
    activated_by: str | None = Field(default=None, max_length=64)
    ended_at: datetime | None = ts_field(nullable=True)
    ended_by: str | None = Field(default=None, max_length=64)
    end_reason: str | None = Field(default=None, max_length=32)
    pause_reason: str | None = Field(default=None, max_length=500)
    version: int = 1
    updated_at: datetime = ts_field(default_now=True, index=True)


class PairingTransition(SQLModel, table=True):
    """One row per transition: pauses and resumes repeat, so their stamps live here."""

    __tablename__ = "pairing_transition"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    pairing_id: uuid.UUID = Field(foreign_key="pairing.id", index=True)
    action: str = Field(max_length=16)
    from_status: str | None = Field(default=None, max_length=16)
    to_status: str = Field(max_length=16)
    at: datetime = ts_field(default_now=True)
    by: str = Field(max_length=64)
    reason: str | None = Field(default=None, max_length=500)


class PairingCreate(InputModel):
    supporter_id: uuid.UUID
    recipient_id: uuid.UUID
    override_reason: str | None = PField(
        None, min_length=10, max_length=500,
        description="Coordinators only: allows a second active pairing for the recipient")


class PairingAction(InputModel):
    reason: str | None = PField(None, min_length=1, max_length=500)
    override_reason: str | None = PField(None, min_length=10, max_length=500)


class PairingEnd(InputModel):
    reason: EndReason
    note: str | None = PField(None, min_length=1, max_length=500)


class TransitionRead(BaseModel):
    action: str
    from_status: str | None
    to_status: str
    at: datetime
    by: str
    reason: str | None

    model_config = {"from_attributes": True}


class PairingHistoryEntry(BaseModel):
    """One transition of a pairing: who moved it, when, and why."""

    action: str = PField(description="`propose`, `activate`, `pause`, `resume` or `end`")
    from_status: PairingStatus | None = PField(description="Null for `propose`")
    to_status: PairingStatus
    at: datetime
    by: str = PField(description="The actor's stable id: `user:<id>`, `client:<id>`, or "
                                 "`system` (a cascade or the certification sweep)")
    by_name: str | None = PField(None, description="The actor's display name: a user's "
                                                   "username, an API client's name, `system`")
    reason: str | None = PField(description=(
        "Why, as given: a pause reason, the note given with a move, the coordinator's "
        "override reason on `propose` (never shown to a peer supporter). A keep-apart behind a "
        "move is named only to callers who may read keep-apart orders; others read "
        "`not_possible`"))
    end_reason: EndReason | None = PField(None, description=(
        "On `end` only; `other` for callers who may not know of a keep-apart"))


class RecipientView(BaseModel):
    """What a peer supporter sees of the person they support."""

    preferred_name: str | None
    housing_unit_id: uuid.UUID | None


class PairingRead(BaseModel):
    id: uuid.UUID
    supporter_id: uuid.UUID
    recipient_id: uuid.UUID
    facility_id: uuid.UUID
    network: Network
    status: PairingStatus
    override_reason: str | None = None
    proposed_at: datetime
    proposed_by: str
    activated_at: datetime | None
    activated_by: str | None
    ended_at: datetime | None
    ended_by: str | None
    end_reason: EndReason | None
    pause_reason: PauseReason | None
    pause_note: str | None = PField(None, description=(
        "The reason a person gave when pausing (`pause_reason`: `requested`)"))
    version: int
    updated_at: datetime
    recipient: RecipientView | None = PField(
        None, description="Only in a peer supporter's view of their own pairings")

    model_config = {"from_attributes": True}

    @field_validator("pause_reason", mode="before")
    @classmethod
    def _pause_reason(cls, stored: Any) -> Any:
        """A person's words are stored as the reason: they read as `requested`."""
        return PauseReason.requested if pause_note(stored) is not None else stored


class Refusal(BaseModel):
    code: str
    detail: str


class CandidateScore(BaseModel):
    shared_language: int
    same_housing_unit: int
    previous_supporter: int
    caseload: int
    total: int


class Candidate(BaseModel):
    supporter_id: uuid.UUID
    preferred_name: str | None
    eligible: bool
    score: CandidateScore | None = None
    caseload: int
    refusals: list[Refusal] = PField(default_factory=list)


class CandidateList(BaseModel):
    recipient_id: uuid.UUID
    eligible: list[Candidate] = PField(description="The best `limit`, best first")
    eligible_total: int
    ineligible: list[Candidate] | None = PField(
        None, description="Coordinators only: supporters who are excluded, and why (`limit`)")
    ineligible_total: int | None = None
