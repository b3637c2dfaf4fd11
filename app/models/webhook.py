"""Webhook endpoints (who gets which events where), their deliveries and each HTTP attempt."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import BigInteger, Column, ForeignKey, Index, Integer, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import InputModel, json_field, ts_field


class EndpointStatus(StrEnum):
    active = "active"
    disabled = "disabled"


class DeliveryStatus(StrEnum):
    pending = "pending"  # waiting for its first or next attempt
    delivered = "delivered"  # a 2xx answer
    failed = "failed"  # given up (retries exhausted, 410, or a manual redelivery that failed)
    skipped = "skipped"  # not sent: the owner may no longer see the event


class WebhookEndpoint(SQLModel, table=True):
    __tablename__ = "webhook_endpoint"
    __table_args__ = (Index("ix_webhook_endpoint_owner", "owner_kind", "owner_id"),)

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    owner_kind: str = Field(max_length=8)  # "user" | "client": whose view of the events counts
    owner_id: uuid.UUID
    url: str = Field(max_length=2000)
    description: str | None = Field(default=None, max_length=200)
    event_types: list = json_field()
    status: str = Field(default=EndpointStatus.active.value, max_length=16)
    disabled_reason: str | None = Field(default=None, max_length=16)
    disabled_at: datetime | None = ts_field(nullable=True)
    # The secrets ("current" and, during a rotation's overlap, "previous") as one JSON blob,
    # encrypted like confidential notes (envelope, endpoint id as associated data).
    secret_ciphertext: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    secret_wrapped_key: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    secret_key_id: str = Field(max_length=64)
    previous_secret_expires_at: datetime | None = ts_field(nullable=True)
    # Failed rounds in a row (a round: the attempts to this endpoint recorded together).
    consecutive_failures: int = 0
    # While failing: the next routine attempt waits until then (one probe at a time); crisis
    # deliveries keep their own schedule. None when healthy.
    retry_at: datetime | None = ts_field(nullable=True)
    # Fan-out cursor: the last outbox id considered for this endpoint.
    last_event_id: int = Field(default=0, sa_column=Column(
        BigInteger().with_variant(Integer(), "sqlite"), nullable=False))
    created_by: str = Field(max_length=64)
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class WebhookDelivery(SQLModel, table=True):
    """One event for one endpoint. Sent in event order per record (endpoint x entity): a
    record's later event waits until its earlier one is delivered or given up; different records
    go side by side, crisis ones first (a manual redelivery stands outside that order)."""

    __tablename__ = "webhook_delivery"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "event_id"),
        Index("ix_webhook_delivery_due", "status", "next_attempt_at"),
        # The claim: an endpoint's due heads, lane by lane.
        Index("ix_webhook_delivery_lane", "endpoint_id", "crisis", "status", "next_attempt_at"),
        # The head check: an earlier pending event of the same record on the same endpoint.
        Index("ix_webhook_delivery_record", "endpoint_id", "entity_id", "status", "event_id"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    endpoint_id: uuid.UUID = Field(foreign_key="webhook_endpoint.id")
    event_id: int = Field(sa_column=Column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("outbox_event.id", name="fk_webhook_delivery_event_id_outbox_event"),
        nullable=False))
    event_type: str = Field(max_length=64)
    # The record the event is about (the outbox event's entity): the unit of ordering.
    entity_id: uuid.UUID
    # The crisis lane (escalation and observation events): claimed first, own send slots.
    crisis: bool = False
    status: str = Field(default=DeliveryStatus.pending.value, max_length=16)
    manual: bool = False
    attempts: int = 0
    first_attempt_at: datetime | None = ts_field(nullable=True)
    next_attempt_at: datetime = ts_field()
    lease_until: datetime | None = ts_field(nullable=True)
    # The worker process holding the lease (app.services.leaseholder: the id of the session
    # advisory lock it holds while alive); another worker takes over once that lock is gone.
    lease_owner: int | None = None
    last_status_code: int | None = None
    last_error: str | None = Field(default=None, max_length=32)
    delivered_at: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field(default_now=True, index=True)
    updated_at: datetime = ts_field(default_now=True)


class WebhookAttempt(SQLModel, table=True):
    __tablename__ = "webhook_attempt"
    __table_args__ = (Index("ix_webhook_attempt_delivery_at", "delivery_id", "attempted_at"),)

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    delivery_id: uuid.UUID = Field(foreign_key="webhook_delivery.id")
    attempted_at: datetime = ts_field()
    status_code: int | None = None
    duration_ms: int
    # An error class (timeout, connect_error, address_refused, redirect_refused, http_status...),
    # never the receiver's response body.
    error: str | None = Field(default=None, max_length=32)


# --- API schemas -------------------------------------------------------------------------

EventTypes = list[str]


class EndpointCreate(InputModel):
    url: str = PField(min_length=8, max_length=2000,
                      description="https (http only to loopback in development mode)")
    event_types: EventTypes = PField(min_length=1, max_length=100,
                                     description="Event types to receive (see /v1/events)")
    description: str | None = PField(None, max_length=200)
    client_id: uuid.UUID | None = PField(
        None, description="Admins only: register the endpoint for this API client (its view of "
                          "the events counts). Omitted: the caller's own endpoint.")


class EndpointUpdate(InputModel):
    url: str | None = PField(None, min_length=8, max_length=2000)
    event_types: EventTypes | None = PField(None, min_length=1, max_length=100)
    description: str | None = PField(None, max_length=200)
    status: EndpointStatus | None = PField(None, description="disable, or re-enable (resumes "
                                                             "with events from now on)")


class RotateSecret(InputModel):
    overlap_hours: int = PField(24, ge=0, le=168, description="How long the old secret keeps "
                                "signing too (both signatures are sent)")


class EndpointRead(BaseModel):
    id: uuid.UUID
    owner_kind: str
    owner_id: uuid.UUID
    url: str
    description: str | None
    event_types: list[str]
    status: EndpointStatus
    disabled_reason: str | None
    disabled_at: datetime | None
    previous_secret_expires_at: datetime | None
    consecutive_failures: int
    version: int
    created_at: datetime
    updated_at: datetime

    model_config = {"from_attributes": True}


class EndpointWithSecret(EndpointRead):
    secret: str = PField(description="whsec_...: shown once; verify signatures with it")


class AttemptRead(BaseModel):
    id: uuid.UUID
    attempted_at: datetime
    status_code: int | None
    duration_ms: int
    error: str | None

    model_config = {"from_attributes": True}


class DeliveryRead(BaseModel):
    id: uuid.UUID
    endpoint_id: uuid.UUID
    event_id: uuid.UUID
    event_type: str
    status: DeliveryStatus
    manual: bool
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime
    attempt_log: list[AttemptRead]


class EventRead(BaseModel):
    """The thin event, as the feed serves it and a webhook carries it."""

    id: uuid.UUID
    type: str = PField(description="One of EventType (a type you do not know: ignore it)")
    occurred_at: datetime
    data: dict[str, Any]
    url: str | None = PField(None, description="Where to fetch the record with your own token")


class EventPage(BaseModel):
    items: list[EventRead]
    next_cursor: str = PField(description="Always present: pass it as `after` next time (the "
                                          "same cursor when nothing new has arrived)")
