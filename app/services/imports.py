"""Bulk imports from a jail management system: CSV or JSON lines, up to 50,000 rows.

Each row goes through the same code as its single-record route (participants.ImportChanges for the
upsert by external id, keep_aparts.OrderChanges for orders by the JMS's order id): rows are
validated one by one, a chunk of rows is applied in one transaction with its audit rows,
events, cascades and the job's progress, so a crash loses at most the chunk in progress and
the job resumes after the last committed one. Invalid rows change nothing; an unchanged row
writes nothing at all.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from pydantic import Field as PField
from sqlalchemy import or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import (
    AUDITED_REFUSALS,
    DomainError,
    NotFound,
    RuleViolation,
    field_error,
)
from app.models import ImportJob
from app.models.import_job import ImportFormat, ImportKind, ImportStatus
from app.models.keep_apart import KeepApartImportRow
from app.models.participant import Code, ParticipantUpsert
from app.security.principal import Principal, load_principal
from app.security.tokens import InvalidToken
from app.services import keep_aparts, participants
from app.services.pagination import keyset_page
from app.services.writer import Writer

MAX_ROWS = 50_000
J = ImportJob.__table__.c


class TooManyRows(DomainError):
    status, code, title = 413, "too_many_rows", "Too many rows"


class ParticipantImportRow(ParticipantUpsert):
    """One participant row: the upsert body plus the external id it is upserted by."""

    external_source: Code
    external_id: str = PField(min_length=1, max_length=128)


# --- the two kinds -------------------------------------------------------------------------

Applied = tuple[dict[str, int], list[dict[str, Any]]]  # counts by outcome, row errors


@dataclass(frozen=True)
class Kind:
    name: ImportKind
    scope: str
    row_model: type[BaseModel]
    columns: tuple[str, ...]  # CSV columns, in template order
    required: tuple[str, ...]  # CSV columns a file must have
    list_columns: frozenset[str]  # CSV cells holding a ';'-separated list
    example: dict[str, str]  # the template's example row
    apply: Callable[[AsyncSession, Principal, Writer, list[tuple[int, Any]]], Awaitable[Applied]]

    def key(self, row: Any) -> tuple[str, str]:
        return row.external_source, row.external_id


def _row_error(line: int, exc: DomainError) -> dict[str, Any]:
    fields = exc.extra.get("errors") or [{}]
    return {"line": line, "field": fields[0].get("field"), "code": exc.code,
            "message": exc.detail}


async def _apply_participants(session: AsyncSession, principal: Principal, w: Writer,
                              rows: list[tuple[int, ParticipantImportRow]]) -> Applied:
    changes = participants.ImportChanges(session, principal, w)
    keys = [(r.external_source, r.external_id) for _, r in rows]
    keys += [(e.source, e.value) for _, r in rows for e in r.external_ids]
    await changes.load(keys, [r for _, r in rows])
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    errors = []
    for line, row in rows:
        try:
            _p, outcome = changes.upsert(row.external_source, row.external_id, row)
        except DomainError as exc:
            errors.append(_row_error(line, exc))
            continue
        counts[outcome] += 1
    await changes.flush()
    return counts, errors


async def _apply_orders(session: AsyncSession, principal: Principal, w: Writer,
                        rows: list[tuple[int, KeepApartImportRow]]) -> Applied:
    changes = keep_aparts.OrderChanges(session, principal, w)
    await changes.load([r for _, r in rows])
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    errors = []
    for line, row in rows:
        try:
            outcome = changes.upsert(row)
        except DomainError as exc:
            errors.append(_row_error(line, exc))
            continue
        counts[outcome] += 1
    await changes.flush()
    return counts, errors


_PARTICIPANT_COLUMNS = (
    "external_source", "external_id", "network", "legal_name", "preferred_name",
    "date_of_birth", "languages", "facility_code", "housing_unit_code", "custody_status",
    "employment_status", "program_roles", "supporter_availability", "unavailable_until",
    "caseload_cap")
_ORDER_COLUMNS = ("external_source", "external_id", "person_source", "person_a", "person_b",
                  "reason", "scope", "authorised_by", "status", "status_reason")

KINDS: dict[ImportKind, Kind] = {
    ImportKind.participants: Kind(
        ImportKind.participants, "participants:write", ParticipantImportRow,
        _PARTICIPANT_COLUMNS,
        ("external_source", "external_id", "network", "legal_name"),
        frozenset({"languages", "program_roles"}),
        {"external_source": "jms", "external_id": "P-000123", "network": "incarcerated",
         "legal_name": "Sam Roe", "preferred_name": "Sam", "date_of_birth": "1990-04-01",
         "languages": "en;es", "facility_code": "CCJ", "housing_unit_code": "A1",
         "custody_status": "in_custody", "program_roles": "recipient"},
        _apply_participants),
    ImportKind.keep_apart_orders: Kind(
        ImportKind.keep_apart_orders, "keep_apart:write", KeepApartImportRow, _ORDER_COLUMNS,
        ("external_source", "external_id", "person_a", "person_b", "reason", "scope",
         "authorised_by"),
        frozenset(),
        {"external_source": "jms", "external_id": "KA-4711", "person_source": "jms",
         "person_a": "P-000123", "person_b": "P-000456", "reason": "threat", "scope": "facility",
         "authorised_by": "Lt. Example", "status": "open"},
        _apply_orders),
}


def template(kind: ImportKind) -> str:
    k = KINDS[kind]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=k.columns, lineterminator="\r\n")
    writer.writeheader()
    writer.writerow(k.example)
    return out.getvalue()


# --- reading a file ------------------------------------------------------------------------

@dataclass
class Parsed:
    """Every row of a file: (line, fields) or (line, None) with its errors."""

    rows: list[tuple[int, dict[str, Any] | None]]
    errors: dict[int, list[dict[str, Any]]]


def _file_error(code: str, detail: str) -> RuleViolation:
    return RuleViolation(detail, code=code)


def parse(content: bytes, fmt: ImportFormat, kind: Kind) -> Parsed:
    """Splits a file into rows (raw fields), counting them first: more than 50,000 is a 413."""
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise _file_error("invalid_encoding", "The file is not UTF-8 text.") from None
    parsed = Parsed([], {})
    if fmt == ImportFormat.jsonl:
        lines = [(n, ln) for n, ln in enumerate(text.split("\n"), start=1) if ln.strip()]
        _check_count(len(lines))
        for n, ln in lines:
            try:
                value = orjson.loads(ln)
            except orjson.JSONDecodeError:
                value = None
            if not isinstance(value, dict):
                parsed.rows.append((n, None))
                parsed.errors[n] = [{"line": n, "field": None, "code": "invalid_json",
                                     "message": "The line is not a JSON object."}]
                continue
            parsed.rows.append((n, value))
        return parsed
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise _file_error("empty_file", "The file has no header row.") from None
    except csv.Error:
        raise _file_error("malformed_csv", "The header row is not valid CSV.") from None
    # Unknown columns are named by position, never by their text: a file without a header
    # row would otherwise have its first person's details echoed back.
    unknown = [i for i, h in enumerate(header, start=1) if h not in kind.columns]
    missing = [c for c in kind.required if c not in header]
    twice = sorted({h for h in header if header.count(h) > 1 and h in kind.columns})
    if unknown or missing or twice:
        raise RuleViolation(
            "The header row does not match the documented columns (see the template).",
            code="invalid_header",
            errors=[{"field": f"column {i}", "message": "unknown column",
                     "type": "unknown_column"} for i in unknown]
            + [{"field": c, "message": "missing column", "type": "missing_column"}
               for c in missing]
            + [{"field": c, "message": "column given twice", "type": "duplicate_column"}
               for c in twice])
    raw: list[tuple[int, list[str] | None]] = []
    start = reader.line_num + 1
    while True:
        try:
            cells: list[str] | None = next(reader)
        except StopIteration:
            break
        except csv.Error:
            raw.append((start, None))
        else:
            if cells and "".join(cells).strip():  # blank lines are skipped
                raw.append((start, cells))
        start = reader.line_num + 1
        if len(raw) > MAX_ROWS:
            break
    _check_count(len(raw))
    for n, cells in raw:
        if cells is None or len(cells) != len(header):
            parsed.rows.append((n, None))
            parsed.errors[n] = [{"line": n, "field": None, "code": "malformed_row",
                                 "message": f"The row does not have {len(header)} cells."}]
            continue
        fields: dict[str, Any] = {}
        for name, cell in zip(header, cells, strict=True):
            cell = cell.strip()
            if not cell:
                continue  # an empty cell leaves the field as it is
            fields[name] = ([v.strip() for v in cell.split(";") if v.strip()]
                            if name in kind.list_columns else cell)
        parsed.rows.append((n, fields))
    return parsed


def _check_count(n: int) -> None:
    if n > MAX_ROWS:
        raise TooManyRows(f"A file may hold at most {MAX_ROWS:,} rows.")


_CODES = {"missing": "missing", "extra_forbidden": "unknown_field", "enum": "invalid_choice",
          "literal_error": "invalid_choice", "value_error": "invalid_row",
          "string_too_long": "invalid_format", "string_too_short": "invalid_format",
          "string_pattern_mismatch": "invalid_format", "too_long": "invalid_format",
          "too_short": "invalid_format", "uuid_parsing": "invalid_uuid",
          "uuid_type": "invalid_uuid"}


def _code(pydantic_type: str) -> str:
    if pydantic_type in _CODES:
        return _CODES[pydantic_type]
    for prefix, code in (("date", "invalid_date"), ("int", "invalid_number"),
                         ("float", "invalid_number"), ("greater_than", "invalid_number"),
                         ("less_than", "invalid_number"), ("bool", "invalid_boolean")):
        if pydantic_type.startswith(prefix):
            return code
    return "invalid_type" if pydantic_type.endswith("_type") else "invalid_value"


def validate(parsed: Parsed, kind: Kind) -> tuple[list[tuple[int, Any]], dict[int, list[dict[str, Any]]]]:
    """Each row through the kind's input model; a key twice in one file is an error on the
    later line. Errors never carry the submitted values."""
    errors = dict(parsed.errors)
    valid: list[tuple[int, Any]] = []
    first: dict[tuple[str, str], int] = {}
    model = kind.row_model
    for n, fields in parsed.rows:
        if fields is None:
            continue
        try:
            row = model.model_validate(fields)
        except ValidationError as exc:
            errors[n] = [{"line": n, "field": e["field"] if e["field"] != "body" else None,
                          "code": _code(e["type"]), "message": e["message"]}
                         for e in map(field_error, exc.errors(include_url=False,
                                                              include_input=False))]
            continue
        key = kind.key(row)
        if key in first:
            errors[n] = [{"line": n, "field": "external_id", "code": "duplicate_row",
                          "message": f"The same external id is on line {first[key]}."}]
            continue
        first[key] = n
        valid.append((n, row))
    return valid, errors


# --- jobs ----------------------------------------------------------------------------------

def _claims(principal: Principal, job_id: uuid.UUID) -> dict[str, str]:
    """What load_principal needs to act as this caller again: their account's current state
    (active, role, facilities) and the token's scopes (and its revocation) still apply."""
    return {"sub": str(principal.id), "sub_kind": principal.kind,
            "jti": principal.jti or f"import:{job_id}", "scope": " ".join(sorted(principal.scopes))}


async def submit(*, session: AsyncSession, settings: Settings, principal: Principal,
                 kind: ImportKind, fmt: ImportFormat, content: bytes,
                 progress: Callable[[ImportJob], None] | None = None
                 ) -> tuple[ImportJob, Parsed]:
    """Checks the file as a whole (size, header, row count), stores the job, and runs it here
    when it is small (or `progress` is given: the CLI); else it waits for a runner."""
    k = KINDS[kind]
    parsed = parse(content, fmt, k)
    job = ImportJob(kind=kind.value, format=fmt.value, created_by=principal.actor,
                    content=content, rows_total=len(parsed.rows))
    job.claims = _claims(principal, job.id)
    inline = progress is not None or job.rows_total <= settings.import_sync_max_rows
    if inline:
        now = utcnow()
        job.status, job.started_at = ImportStatus.running.value, now
        job.lease_until = now + timedelta(seconds=settings.import_lease_seconds)
    session.add(job)
    w = Writer(session, principal)
    w.audit(f"import.{kind.value}", "import_job", job.id)
    await w.commit()
    if inline:
        await run(session=session, settings=settings, principal=principal, job=job,
                  parsed=parsed, progress=progress)
    return job, parsed


async def run(*, session: AsyncSession, settings: Settings, principal: Principal, job: ImportJob,
              parsed: Parsed | None = None,
              progress: Callable[[ImportJob], None] | None = None) -> ImportJob:
    """Processes a claimed job from its first uncommitted row to the end, one transaction
    per chunk (the chunk's changes, audit rows, events and the job's progress together)."""
    kind = KINDS[ImportKind(job.kind)]
    if kind.scope not in principal.scopes:
        return await _fail(session, job, "insufficient_scope")
    if parsed is None:
        try:
            parsed = parse(job.content or b"", ImportFormat(job.format), kind)
        except DomainError as exc:
            return await _fail(session, job, exc.code)
    valid, errors = validate(parsed, kind)
    lines = [n for n, _ in parsed.rows]
    by_line = dict(valid)
    size = settings.import_chunk_rows
    while job.rows_done < len(lines):
        chunk = lines[job.rows_done:job.rows_done + size]
        rows = [(n, by_line[n]) for n in chunk if n in by_line]
        w, counts, row_errors = await _apply_chunk(session, principal, kind, job, rows)
        for e in row_errors:
            if e["code"] in AUDITED_REFUSALS:  # reaching outside one's scope, as on the routes
                w.audit(f"import.{kind.name.value}.row", "import_job", job.id, outcome="refused")
        found = [e for n in chunk for e in errors.get(n, [])] + row_errors
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
        if job.rows_done >= len(lines):
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
        .where(J.id == job_id, J.status.in_((ImportStatus.queued.value, ImportStatus.running.value)),
               or_(J.lease_until.is_(None), J.lease_until < now))
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
                      parsed: Parsed | None = None) -> ImportJob:
    """Runs a claimed job as its creator (their account as it is now)."""
    try:
        principal = await load_principal(session, dict(job.claims))
    except InvalidToken:
        return await _fail(session, job, "principal_inactive")
    return await run(session=session, settings=settings, principal=principal, job=job,
                     parsed=parsed)


async def resume_stalled(session: AsyncSession, settings: Settings) -> dict[str, int]:
    """Worker job: runs every queued job nobody holds and every job whose lease ran out."""
    now = utcnow()
    ids = list((await session.execute(
        select(J.id).where(J.status.in_((ImportStatus.queued.value, ImportStatus.running.value)),
                           or_(J.lease_until.is_(None), J.lease_until < now))
        .order_by(J.id).limit(10))).scalars())
    await session.commit()
    done = 0
    for job_id in ids:
        job = await claim(session, settings, job_id)
        if job is not None:
            await run_claimed(session, settings, job)
            done += 1
    return {"imports_resumed": done}


# --- reading jobs --------------------------------------------------------------------------

def _mine(principal: Principal) -> Any:
    return select(ImportJob).where(J.created_by == principal.actor)


async def get(*, session: AsyncSession, principal: Principal, import_id: uuid.UUID) -> ImportJob:
    job = (await session.execute(_mine(principal).where(J.id == import_id))).scalar_one_or_none()
    if job is None:
        raise NotFound("No such import.")
    return job


async def list_(*, session: AsyncSession, principal: Principal, limit: int,
                cursor: str | None) -> tuple[list[ImportJob], str | None]:
    return await keyset_page(session, _mine(principal), J.id, kind="import", limit=limit,
                             cursor=cursor)


__all__ = ["KINDS", "MAX_ROWS", "claim", "get", "list_", "resume_stalled", "run",
           "run_claimed", "submit", "template"]
