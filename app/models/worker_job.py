"""Worker liveness: one row per background job, upserted at the end of each successful round
by whichever worker ran it (and stamped on a failed one), read by /readyz and /metrics."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from app.models.common import ts_field


class WorkerJob(SQLModel, table=True):
    __tablename__ = "worker_job"

    name: str = Field(primary_key=True, max_length=64)
    last_success_at: datetime | None = ts_field(nullable=True)
    last_error_at: datetime | None = ts_field(nullable=True)
    rounds: int = 0  # successful rounds, across every worker
