"""Worker liveness and backlog figures: each job's last successful round (recorded by the
worker in `worker_job`), read by /readyz and by /metrics at scrape time (a few indexed,
bounded queries; nothing is cached between scrapes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import bindparam, func, select, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncSession

from app.db import UTCDateTime, utcnow
from app.models import WorkerJob
from app.models.import_job import ImportJob, ImportStatus
from app.models.webhook import DeliveryStatus, WebhookDelivery

BREACH_SWEEP = "escalation_breach_sweep"

# One statement on both databases (SQLite >= 3.24 and PostgreSQL know ON CONFLICT).
_SUCCESS = text(
    "INSERT INTO worker_job (name, last_success_at, last_error_at, rounds) "
    "VALUES (:name, :at, NULL, :n) ON CONFLICT (name) DO UPDATE SET "
    "last_success_at = excluded.last_success_at, rounds = worker_job.rounds + excluded.rounds"
).bindparams(bindparam("at", type_=UTCDateTime()))
_FAILURE = text(
    "INSERT INTO worker_job (name, last_success_at, last_error_at, rounds) "
    "VALUES (:name, NULL, :at, 0) ON CONFLICT (name) DO UPDATE SET "
    "last_error_at = excluded.last_error_at").bindparams(bindparam("at", type_=UTCDateTime()))


async def record_success(session: AsyncSession, job: str, rounds: int = 1) -> datetime:
    """Stamps `job`'s successful round(s) and commits (one statement)."""
    at = utcnow()
    await session.execute(_SUCCESS, {"name": job, "at": at, "n": rounds})
    await session.commit()
    return at


async def record_failure(session: AsyncSession, job: str) -> None:
    await session.execute(_FAILURE, {"name": job, "at": utcnow()})
    await session.commit()


async def last_successes(conn: AsyncConnection | AsyncSession) -> dict[str, datetime | None]:
    """Each recorded job's last successful round (None: it has only failed so far)."""
    J = WorkerJob.__table__.c  # type: ignore[attr-defined]
    rows = (await conn.execute(select(J.name, J.last_success_at))).all()
    return {name: at for name, at in rows}


@dataclass(frozen=True)
class Backlog:
    webhook_pending: int
    webhook_oldest_pending_age_seconds: float
    import_jobs_open: int


async def backlog(conn: AsyncConnection | AsyncSession) -> Backlog:
    now = utcnow()
    D = WebhookDelivery.__table__.c  # type: ignore[attr-defined]
    Ij = ImportJob.__table__.c  # type: ignore[attr-defined]
    pending, oldest = (await conn.execute(
        select(func.count(), func.min(D.created_at))
        .where(D.status == DeliveryStatus.pending.value))).one()
    open_jobs = (await conn.execute(
        select(func.count()).select_from(ImportJob.__table__)  # type: ignore[arg-type]
        .where(Ij.status.in_([ImportStatus.queued.value, ImportStatus.running.value])))
    ).scalar_one()
    if isinstance(oldest, str):  # min() over SQLite's text loses the column type
        oldest = datetime.fromisoformat(oldest)
    if oldest is not None and oldest.tzinfo is None:
        oldest = oldest.replace(tzinfo=UTC)
    age = max(0.0, (now - oldest).total_seconds()) if oldest else 0.0
    return Backlog(int(pending), age, int(open_jobs))
