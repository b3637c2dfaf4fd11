"""Stream tickets: what a browser's EventSource presents instead of a bearer token (it cannot
send an Authorization header). Short-lived and single-use; only the ticket's SHA-256 is
stored, with the claims of the access token that asked for it."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from app.models.common import json_field, ts_field


class StreamTicket(SQLModel, table=True):
    __tablename__ = "stream_ticket"
    __table_args__ = (Index("ix_stream_ticket_expires_at", "expires_at"),)

    id: str = Field(primary_key=True, max_length=64)  # sha256 hex of the ticket
    # The access token's verified claims (sub, sub_kind, jti, scope, exp, ...): the stream is
    # that token's, checked again at every heartbeat and closed when it expires.
    claims: dict[str, Any] = json_field(default_factory=dict)
    created_at: datetime = ts_field(default_now=True)
    expires_at: datetime = ts_field()


class StreamTicketRead(BaseModel):
    """A ticket for one `GET /v1/stream?ticket=...` (shown once; never stored in clear)."""

    ticket: str
    expires_at: datetime
