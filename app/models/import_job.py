"""Bulk imports from a jail management system: the job, its progress and per-row results."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import Column, Index, LargeBinary
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.models.common import json_field, ts_field


class ImportKind(StrEnum):
    participants = "participants"
    keep_apart_orders = "keep_apart_orders"


class ImportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


# The bodies an import takes (the routes and the body-limit middleware both go by this).
CONTENT_TYPES = {"text/csv": ImportFormat.csv, "application/x-ndjson": ImportFormat.jsonl}


class ImportStatus(StrEnum):
    queued = "queued"
    running = "running"
    completed = "completed"
    failed = "failed"


class ImportJob(SQLModel, table=True):
    """One uploaded file. Small files are processed in the request and stored already
    completed; large ones wait here (with their content) for a runner, which commits each chunk
    together with `rows_done`, so a restart resumes after the last committed chunk. The content
    is dropped once the job ends (it holds names and dates of birth)."""

    __tablename__ = "import_job"
    __table_args__ = (
        Index("ix_import_job_created_by_id", "created_by", "id"),
        Index("ix_import_job_status_lease", "status", "lease_until"),
    )

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    kind: str = Field(max_length=32)
    format: str = Field(max_length=8)
    status: str = Field(default=ImportStatus.queued.value, max_length=16)
    created_by: str = Field(max_length=64)  # principal.actor: the only one who may read it
    # What the runner needs to act as the caller again (the account's current state wins).
    claims: dict = json_field(default_factory=dict)
    content: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    rows_total: int = 0
    rows_done: int = 0
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    failed: int = 0
    errors: list = json_field()
    errors_truncated: bool = False
    failure: str | None = Field(default=None, max_length=64)  # a whole-job failure's code
    lease_until: datetime | None = ts_field(nullable=True)
    created_at: datetime = ts_field(default_now=True)
    started_at: datetime | None = ts_field(nullable=True)
    finished_at: datetime | None = ts_field(nullable=True)


class RowError(BaseModel):
    line: int
    field: str | None = None
    code: str
    message: str


class ImportSummary(BaseModel):
    id: uuid.UUID
    kind: ImportKind
    format: ImportFormat
    status: ImportStatus
    rows_total: int
    rows_done: int
    created: int
    updated: int
    unchanged: int
    failed: int
    errors_truncated: bool
    failure: str | None = PField(description="Why a failed job stopped (a stable code)")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def fields_of(cls, job: ImportJob) -> dict[str, Any]:
        return {
            "id": job.id, "kind": ImportKind(job.kind), "format": ImportFormat(job.format),
            "status": ImportStatus(job.status), "rows_total": job.rows_total,
            "rows_done": job.rows_done, "created": job.created, "updated": job.updated,
            "unchanged": job.unchanged, "failed": job.failed,
            "errors_truncated": job.errors_truncated, "failure": job.failure,
            "created_at": job.created_at, "started_at": job.started_at,
            "finished_at": job.finished_at}

    @classmethod
    def of(cls, job: ImportJob) -> ImportSummary:
        return cls(**cls.fields_of(job))


class ImportRead(ImportSummary):
    errors: list[RowError] = PField(description="Per-row errors in line order (the first "
                                                "1,000; see errors_truncated)")

    @classmethod
    def of(cls, job: ImportJob) -> ImportRead:
        return cls(**cls.fields_of(job), errors=[RowError(**e) for e in job.errors or []])
