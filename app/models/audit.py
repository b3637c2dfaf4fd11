"""The append-only audit trail (hash-chained) and the domain-event outbox."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel
from sqlalchemy import BigInteger, Column, Identity, Index, Integer
from sqlmodel import Field, SQLModel

from app.models.common import json_field, ts_field


class AuditEvent(SQLModel, table=True):
    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_entity", "entity_type", "entity_id"),
        Index("ix_audit_event_actor_id", "actor_id"),
        Index("ix_audit_event_occurred_at", "occurred_at"),
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), Identity(),
                         primary_key=True),
    )
    occurred_at: datetime = ts_field(default_now=True)
    actor_type: str = Field(max_length=16)
    actor_id: str | None = Field(default=None, max_length=64)
    role: str | None = Field(default=None, max_length=32)
    client_id: str | None = Field(default=None, max_length=64)
    facility_id: uuid.UUID | None = None
    # The network of the record the row concerns (None: no record, or written before 1.10).
    network: str | None = Field(default=None, max_length=16)
    action: str = Field(max_length=64)
    entity_type: str | None = Field(default=None, max_length=64)
    entity_id: str | None = Field(default=None, max_length=64)
    outcome: str = Field(max_length=16)
    request_id: str | None = Field(default=None, max_length=64)
    # The client's address (behind trusted proxies, the forwarded one); None outside requests.
    client_address: str | None = Field(default=None, max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class AuditEventRead(BaseModel):
    id: int
    occurred_at: datetime
    actor_type: str
    actor_id: str | None
    role: str | None
    client_id: str | None
    facility_id: uuid.UUID | None
    action: str
    entity_type: str | None
    entity_id: str | None
    outcome: str
    request_id: str | None
    client_address: str | None = None
    network: str | None = None
    hash: str

    model_config = {"from_attributes": True}


class OutboxEvent(SQLModel, table=True):
    """Domain events, written in the same transaction as the change; delivered later."""

    __tablename__ = "outbox_event"
    __table_args__ = (Index("ix_outbox_event_type_id", "type", "id"),)

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger().with_variant(Integer(), "sqlite"), Identity(),
                         primary_key=True),
    )
    event_id: uuid.UUID = Field(unique=True)
    type: str = Field(max_length=64)
    occurred_at: datetime = ts_field(default_now=True)
    entity_type: str = Field(max_length=64)
    entity_id: uuid.UUID
    facility_id: uuid.UUID | None = Field(default=None, index=True)
    network: str | None = Field(default=None, max_length=16)
    data: dict = json_field(default_factory=dict)
