"""Import jobs: submit (small files in the request, large ones as a resumable job), run in
chunks of one transaction each, claim and resume after a crash; reading one's own jobs."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

from asgi_correlation_id import correlation_id
from sqlalchemy import func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from app.config import Settings
from app.db import utcnow
from app.errors import AUDITED_REFUSALS, DomainError, NotFound
from app.models import ImportJob
from app.models.import_job import ImportFormat, ImportKind, ImportStatus
from app.security.principal import Principal, load_principal
from app.security.tokens import InvalidToken
from app.services.audit import Place, callers_place
from app.services.imports.files import Record, Validator, check, records
from app.services.imports.kinds import KINDS, Kind
from app.services.pagination import keyset_page
from app.services.writer import Writer

JOBS = ImportJob.__table__.c
_OPEN = (ImportStatus.queued.value, ImportStatus.running.value)  # a runner may take these
# PostgreSQL: a large job's id, sent when it is stored (delivered at its commit), so that a
# `peerlink worker` takes it at once (app.worker.taking_imports).
CHANNEL = "peerlink_imports"


def _claims(principal: Principal, job_id: uuid.UUID) -> dict[str, str]:
    """What load_principal needs to act as this caller again: their account's current state
    (active, role, facilities) and the token's scopes (and its revocation) still apply. With
    the request's id, which the job's audit rows carry whichever process runs it."""
    claims = {"sub": str(principal.id), "sub_kind": principal.kind,
              "jti": principal.jti or f"import:{job_id}",
              "scope": " ".join(sorted(principal.scopes))}
    if (request_id := correlation_id.get()) is not None:
        claims["request_id"] = request_id
    return claims


async def submit(*, session: AsyncSession, settings: Settings, principal: Principal,
                 kind: ImportKind, fmt: ImportFormat, content: bytes,
                 progress: Callable[[ImportJob], None] | None = None) -> ImportJob:
    """Checks the file as a whole (size, header, encoding, row count: nothing of it is kept
    but the count), stores the job with the file, and runs it here when it is small (or
    `progress` is given: the CLI); else it waits for a runner."""
    k = KINDS[kind]
    rows_total = check(content, fmt, k)
    job = ImportJob(kind=kind.value, format=fmt.value, created_by=principal.actor,
                    content=content, rows_total=rows_total)
    job.claims = _claims(principal, job.id)
    inline = progress is not None or job.rows_total <= settings.import_sync_max_rows
    if inline:
        now = utcnow()
        job.status, job.started_at = ImportStatus.running.value, now
        job.lease_until = now + timedelta(seconds=settings.import_lease_seconds)
    session.add(job)
    w = Writer(session, principal)
    place = callers_place(principal)
    w.audit(f"import.{kind.value}", "import_job", job.id, *_stamp(place))
    if not inline and session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
        await session.execute(select(func.pg_notify(CHANNEL, str(job.id))))
    await w.commit()
    if inline:
        await run(session=session, settings=settings, principal=principal, job=job,
                  content=content, progress=progress)
    return job


def _chunks(rows: Iterator[Record], validator: Validator, skip: int,
            size: int) -> Iterator[list[Record]]:
    """The file's rows after the first `skip` (committed before a crash: only their keys are
    noted, for the duplicate check), `size` at a time."""
    chunk: list[Record] = []
    for i, record in enumerate(rows):
        if i < skip:
            validator.chunk([record])
            continue
        chunk.append(record)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


async def run(*, session: AsyncSession, settings: Settings, principal: Principal, job: ImportJob,
              content: bytes | None = None,
              progress: Callable[[ImportJob], None] | None = None) -> ImportJob:
    """Processes a claimed job from its first uncommitted row to the end, one transaction
    per chunk (the chunk's changes, audit rows, events and the job's progress together). The
    file is read a chunk at a time: one chunk of rows is held, never the whole file's."""
    kind = KINDS[ImportKind(job.kind)]
    if kind.scope not in principal.scopes:
        return await _fail(session, job, "insufficient_scope")
    content = job.content if content is None else content
    validator = Validator(kind)
    chunks = _chunks(records(content or b"", ImportFormat(job.format), kind), validator,
                     job.rows_done, settings.import_chunk_rows)
    while True:
        try:
            chunk = next(chunks, None)
        except DomainError as exc:  # a file that no longer reads (it was checked when sent)
            return await _fail(session, job, exc.code)
        if chunk is None:
            break
        valid, errors = validator.chunk(chunk)
        w, counts, row_errors = await _apply_chunk(session, principal, kind, job, valid)
        for e in row_errors:
            if e["code"] in AUDITED_REFUSALS:  # reaching outside one's scope, as on the routes
                w.audit(f"import.{kind.name.value}.row", "import_job", job.id,
                        *_stamp(callers_place(principal)), outcome="refused")
        found = [e for n, _f, _e in chunk for e in errors.get(n, [])] + row_errors
        found.sort(key=lambda e: e["line"])
        room = settings.import_max_errors - len(job.errors or [])
        job.errors = [*(job.errors or []), *found[:max(room, 0)]]
        job.errors_truncated = job.errors_truncated or len(found) > room
        job.failed += len({e["line"] for e in found})
        job.created += counts["created"]
        job.updated += counts["updated"]
        job.unchanged += counts["unchanged"]
        job.rows_done += len(chunk)
        job.lease_until = utcnow() + timedelta(seconds=settings.import_lease_seconds)
        if job.rows_done >= job.rows_total:
            _finish(job, ImportStatus.completed)
        # The job row (progress) commits with the chunk it counts.
        session.add(job)
        await w.commit()
        if progress:
            progress(job)
    if job.status != ImportStatus.completed.value:
        _finish(job, ImportStatus.completed)
        session.add(job)
        await session.commit()
    return job


async def _apply_chunk(session: AsyncSession, principal: Principal, kind: Kind, job: ImportJob,
                       rows: list[tuple[int, Any]]) -> tuple[Writer, dict[str, int],
                                                             list[dict[str, Any]]]:
    """The chunk's changes, on a Writer the caller commits with the job's progress. A
    concurrent writer taking the same external id first makes the flush fail: the chunk is
    rolled back and decided again, on what is now there."""
    for attempt in (1, 2):
        w = Writer(session, principal)
        try:
            counts, errors = await kind.apply(session, principal, w, rows)
        except DomainError:
            if attempt == 2:
                raise
            await session.rollback()
            await session.refresh(job)
            continue
        return w, counts, errors
    raise AssertionError("unreachable")


def _finish(job: ImportJob, status: ImportStatus, failure: str | None = None) -> None:
    job.status = status.value
    job.failure = failure
    job.finished_at = utcnow()
    job.lease_until = None
    job.content = None  # names and dates of birth are not kept once the job is done


async def _fail(session: AsyncSession, job: ImportJob, code: str) -> ImportJob:
    _finish(job, ImportStatus.failed, code)
    session.add(job)
    await session.commit()
    return job


async def claim(session: AsyncSession, settings: Settings, job_id: uuid.UUID) -> ImportJob | None:
    """Takes a queued job, or one whose runner stopped renewing its lease (a crash, a
    restart); None when someone else holds it or it is done."""
    now = utcnow()
    taken = await session.execute(
        update(ImportJob.__table__)
        .where(JOBS.id == job_id, JOBS.status.in_(_OPEN),
               or_(JOBS.lease_until.is_(None), JOBS.lease_until < now))
        .values(status=ImportStatus.running.value,
                lease_until=now + timedelta(seconds=settings.import_lease_seconds)))
    await session.commit()
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        return None
    job = await session.get(ImportJob, job_id, populate_existing=True)
    if job is not None and job.started_at is None:
        job.started_at = now
    return job


async def run_claimed(session: AsyncSession, settings: Settings, job: ImportJob,
                      content: bytes | None = None) -> ImportJob:
    """Runs a claimed job as its creator (their account as it is now), under the id of the
    request that sent it."""
    token = correlation_id.set(job.claims.get("request_id") or correlation_id.get())
    try:
        try:
            principal = await load_principal(session, dict(job.claims))
        except InvalidToken:
            return await _fail(session, job, "principal_inactive")
        return await run(session=session, settings=settings, principal=principal, job=job,
                         content=content)
    finally:
        correlation_id.reset(token)


async def waiting(session: AsyncSession, limit: int = 10) -> list[uuid.UUID]:
    """Open jobs nobody holds: queued ones not yet taken, and those whose lease ran out."""
    ids = list((await session.execute(
        select(JOBS.id).where(JOBS.status.in_(_OPEN),
                              or_(JOBS.lease_until.is_(None), JOBS.lease_until < utcnow()))
        .order_by(JOBS.id).limit(limit))).scalars())
    await session.commit()
    return ids


async def resume_stalled(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """Worker job: runs every queued job nobody holds and every job whose lease ran out."""
    ids = await waiting(session)
    done = 0
    for job_id in ids:
        job = await claim(session, settings, job_id)
        if job is not None:
            await run_claimed(session, settings, job)
            done += 1
    return {"imports_resumed": done}


# --- reading jobs --------------------------------------------------------------------------

def _mine(principal: Principal) -> Any:
    # Never the file itself: a client polling a running 150,000-row job would read it each time.
    return (select(ImportJob).options(defer(ImportJob.content))  # type: ignore[arg-type]
            .where(JOBS.created_by == principal.actor))


async def get(*, session: AsyncSession, principal: Principal, import_id: uuid.UUID) -> ImportJob:
    job = (await session.execute(_mine(principal).where(JOBS.id == import_id))).scalar_one_or_none()
    if job is None:
        raise NotFound("No such import.")
    return job


async def list_(*, session: AsyncSession, principal: Principal, limit: int,
                cursor: str | None) -> tuple[list[ImportJob], str | None]:
    return await keyset_page(session, _mine(principal), JOBS.id, kind="import", limit=limit,
                             cursor=cursor)


def _stamp(place: Place | None) -> tuple[uuid.UUID | None, str | None]:
    """An import job's audit rows: its caller's place (audit.callers_place)."""
    return (place.facility_id, place.network) if place else (None, None)
