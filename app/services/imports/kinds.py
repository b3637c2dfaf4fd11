"""The two kinds of import (participants, keep-apart orders): their rows, CSV columns and
template, and how a chunk of valid rows is applied (through the single-record code)."""

from __future__ import annotations

import csv
import io
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import (
    DomainError,
)
from app.models.import_job import ImportKind
from app.models.keep_apart import KeepApartImportRow
from app.models.participant import Code, ParticipantUpsert
from app.security.principal import Principal
from app.services import keep_aparts, participants
from app.services.writer import Writer

# A state department's nightly roster is about 150,000 rows; rows are read a chunk at a time.
MAX_ROWS = 200_000


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


