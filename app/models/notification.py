"""Escalation notifications: that a person on call was paged about an escalation, at which
level of the chain, by which channel, how many times, and when they acknowledged. Part of the
escalation's record (its timeline shows each page); the paging state machine is
`services.escalations.paging.NOTIFICATION_FLOW`."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import Network, ts_field


class NotificationStatus(StrEnum):
    paging = "paging"  # re-paged every few minutes until it stops
    acknowledged = "acknowledged"  # the person acknowledged: pages for the level stop
    stood_down = "stood_down"  # someone else at the level acknowledged
    closed = "closed"  # the escalation was acknowledged or resolved


class NotificationChannel(StrEnum):
    # An `escalation.paged` event: the live stream carries it to boards and tablets, and a
    # facility's paging/radio/SMS gateway takes it by webhook.
    page = "page"


class NotificationReason(StrEnum):
    raised = "raised"  # a high or imminent escalation pages the first level at once
    breached = "breached"  # the acknowledgement deadline passed


class EscalationNotification(SQLModel, table=True):
    __tablename__ = "escalation_notification"
    __table_args__ = (
        Index("ix_escalation_notification_status_paged", "status", "last_paged_at"),
        Index("ix_escalation_notification_escalation_level", "escalation_id", "level"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    escalation_id: uuid.UUID = Field(foreign_key="escalation.id")
    facility_id: uuid.UUID = Field(foreign_key="facility.id")
    network: str = Field(max_length=16)
    level: int
    level_name: str = Field(max_length=64)
    user_id: uuid.UUID = Field(foreign_key="app_user.id")
    channel: str = Field(default=NotificationChannel.page.value, max_length=16)
    reason: str = Field(max_length=16)
    status: str = Field(default=NotificationStatus.paging.value, max_length=16)
    attempts: int = 1
    notified_at: datetime = ts_field()
    last_paged_at: datetime = ts_field()
    acknowledged_at: datetime | None = ts_field(nullable=True)
    acknowledged_by: str | None = Field(default=None, max_length=64)
    stood_down_at: datetime | None = ts_field(nullable=True)
    closed_at: datetime | None = ts_field(nullable=True)
    version: int = 1


class NotificationRead(BaseModel):
    """What a paging gateway needs to page someone: whom (id and display name), for which
    escalation, level and facility. Never clinical detail."""

    id: uuid.UUID
    escalation_id: uuid.UUID
    facility_id: uuid.UUID
    facility_code: str
    network: Network
    level: int
    level_name: str
    user_id: uuid.UUID
    display_name: str
    channel: NotificationChannel
    reason: NotificationReason
    status: NotificationStatus = PField(description="paging: page (again); anything else: stop")
    attempts: int
    notified_at: datetime
    last_paged_at: datetime
    acknowledged_at: datetime | None
    acknowledged_by: str | None
    stood_down_at: datetime | None
    closed_at: datetime | None
    version: int
