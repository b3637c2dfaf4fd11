"""Idempotency keys: one row per (caller, key), holding the first request's fingerprint and,
once it has finished, its response (encrypted at rest: a response may carry a secret shown once).
"""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import json_field, ts_field


class IdempotencyKey(SQLModel, table=True):
    __tablename__ = "idempotency_key"
    __table_args__ = (
        UniqueConstraint("caller", "key"),
        Index("ix_idempotency_key_expires_at", "expires_at"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    caller: str = Field(max_length=64)  # the token's subject: a user or an API client
    key: str = Field(max_length=200)
    fingerprint: str = Field(max_length=64)  # sha256 of method, path, query and body
    # in_flight -> committed (the business transaction landed) -> completed (response stored)
    state: str = Field(max_length=16)
    owner: str = Field(max_length=32)  # which attempt holds the key; a takeover changes it
    # The API process running that attempt (services.idempotency.Liveness): once it is gone,
    # a retry takes the key over at once instead of waiting out `locked_until`. None: unknown
    # (the lease decides).
    holder: str | None = Field(default=None, max_length=64)
    # What the attempt created, recorded by the business transaction that marked the key
    # committed (Writer.commit): a retry whose answer was lost is answered from this record.
    result_type: str | None = Field(default=None, max_length=40)
    result_id: str | None = Field(default=None, max_length=64)
    locked_until: datetime = ts_field()
    created_at: datetime = ts_field(default_now=True)
    expires_at: datetime = ts_field()
    response_status: int | None = None
    response_headers: list = json_field(default_factory=list)
    response_body: bytes | None = Field(default=None, sa_column=Column(LargeBinary()))
    response_key: bytes | None = Field(default=None, sa_column=Column(LargeBinary()))
    response_key_id: str | None = Field(default=None, max_length=32)
