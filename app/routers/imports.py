"""/v1/imports: bulk participants and keep-apart orders from a jail management system."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter, Request, Response, status

from app.config import Settings
from app.deps import (
    IdempotencyKeyRequired,
    ImportRunnerDep,
    Principal,
    SessionDep,
    SettingsDep,
    require,
)
from app.errors import PROBLEM, DomainError
from app.models.common import Page
from app.models.import_job import (
    CONTENT_TYPES,
    ImportKind,
    ImportRead,
    ImportStatus,
    ImportSummary,
)
from app.routemarks import ImportFile
from app.routers.common import AUTHED, DEFAULT, Cursor, Limit, problems
from app.services import imports as svc
from app.services.import_runner import ImportRunner

router = APIRouter(prefix="/v1/imports", tags=["imports"], responses=AUTHED)


class UnsupportedMediaType(DomainError):
    status, code, title = 415, "unsupported_media_type", "Unsupported media type"


_COMMON = """
Send the file as the body: `Content-Type: text/csv` (a header row with the documented
columns, UTF-8, `;` between the items of a list cell, an empty cell leaves the field as it is)
or `application/x-ndjson` (one JSON object per line, the same field names). At most 200,000
rows (413 `too_many_rows`) and 64 MB (413 `payload_too_large`); other content types get 415.
An `Idempotency-Key` header is required.

Every row is validated on its own and applied by the same rules as the single-record route;
invalid rows change nothing and are reported with their line number (CSV: the header is line
1), field, stable `code` and a message that never repeats the submitted value; valid rows land.
The same file twice changes nothing the second time (`unchanged`). A row for a facility,
person or order outside your scope fails exactly like an unknown one.

Up to 2,000 rows are answered at once (200, the finished import). Larger files answer 202
with `Location: /v1/imports/{id}`: the import runs in chunks of 1,000 rows, each read from the
stored file, committed with its audit records and events, and `GET /v1/imports/{id}` shows its
progress.
"""

_PARTICIPANT_DOC = """Upsert participants by external id, as `PUT
/v1/participants/by-external-id/{source}/{value}` does for one, cascades included (a release
ends the person's pairings, a transfer too, a housing move pauses pairings against a keep-apart
order).

| column | | |
|---|---|---|
| `external_source` | required | the system the id comes from, e.g. `jms` |
| `external_id` | required | the person's id (or booking number) in that system |
| `network` | required | `incarcerated` or `staff` (cannot change) |
| `legal_name` | required | |
| `preferred_name`, `date_of_birth` (YYYY-MM-DD) | | |
| `languages` | list | e.g. `en;es` |
| `facility_code`, `housing_unit_code` | | the JMS's codes; a new person needs a facility |
| `custody_status` | | `in_custody`, `transferred`, `released` |
| `employment_status` | | staff network: `employed`, `on_leave`, `separated` |
| `program_roles` | list | `supporter`, `recipient` |
| `supporter_availability`, `unavailable_until`, `caseload_cap` | | |

JSON lines may also carry `facility_id`, `housing_unit_id` and `external_ids` (more ids of the
same person). Template: `GET /v1/imports/participants/template`.
""" + _COMMON

_ORDER_DOC = """Open and close keep-apart orders by the JMS's own order id, as `POST
/v1/keep-apart-orders` and its close/reopen do (a newly open order ends the pair's
pairings).

| column | | |
|---|---|---|
| `external_source`, `external_id` | required | the order's id in the JMS |
| `person_a`, `person_b` | required | the two people's external ids |
| `person_source` | | their ids' system (default: `external_source`) |
| `reason` | required | `threat`, `violence`, `gang`, `co_defendant`, `legal`, `other` |
| `scope` | required | `cell`, `unit`, `facility` |
| `authorised_by` | required | |
| `status` | | `open` (default) or `closed` |
| `status_reason` | | why it was closed or reopened |

An order's two people cannot change (`keep_apart_people_changed`). Template:
`GET /v1/imports/keep-apart-orders/template`.
""" + _COMMON

_ACCEPTED: dict[int | str, dict[str, Any]] = {202: {"model": ImportRead,
                   "description": "A large file: the import job (see Location), running"}}
_BAD_REQUEST: dict[int | str, dict[str, Any]] = {400: {"description": "Missing Idempotency-Key",
                      "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}}


def _body(kind: ImportKind) -> dict[str, Any]:
    return {"requestBody": {"required": True, "content": {
        "text/csv": {"schema": {"type": "string", "format": "binary"},
                     "example": svc.template(kind)},
        "application/x-ndjson": {"schema": {"type": "string", "format": "binary"}}}}}


# The caller is authenticated (401/403) before the Idempotency-Key is asked for (400).
async def _submit(request: Request, response: Response, session: Any, settings: Settings,
                  runner: ImportRunner, principal: Principal, kind: ImportKind) -> ImportRead:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fmt = CONTENT_TYPES.get(ctype)
    if fmt is None:
        raise UnsupportedMediaType("Send imports as text/csv or application/x-ndjson.")
    content = await request.body()
    job = await svc.submit(session=session, settings=settings, principal=principal,
                           kind=kind, fmt=fmt, content=content)
    response.headers["Location"] = f"/v1/imports/{job.id}"
    if job.status == ImportStatus.queued.value:
        response.status_code = status.HTTP_202_ACCEPTED
        runner.offer(job.id, content)  # a worker process, or this one (import_runner.py)
    return ImportRead.of(job)


@router.post("/participants", response_model=ImportRead, description=_PARTICIPANT_DOC,
             responses={**_ACCEPTED, **_BAD_REQUEST, **problems(413, 415)}, dependencies=[ImportFile],
             openapi_extra=_body(ImportKind.participants))
async def import_participants(request: Request, response: Response, session: SessionDep,
                              settings: SettingsDep, runner: ImportRunnerDep,
                              *, principal: Principal = require("participants:write"),
                              idempotency_key: IdempotencyKeyRequired) -> ImportRead:
    """Bulk upsert of participants (CSV or JSON lines)"""
    return await _submit(request, response, session, settings, runner, principal,
                         ImportKind.participants)


@router.post("/keep-apart-orders", response_model=ImportRead, description=_ORDER_DOC,
             responses={**_ACCEPTED, **_BAD_REQUEST, **problems(413, 415)}, dependencies=[ImportFile],
             openapi_extra=_body(ImportKind.keep_apart_orders))
async def import_keep_apart_orders(request: Request, response: Response, session: SessionDep,
                                   settings: SettingsDep, runner: ImportRunnerDep,
                                   *, principal: Principal = require("keep_apart:write"),
                                   idempotency_key: IdempotencyKeyRequired) -> ImportRead:
    """Bulk open/close of keep-apart orders by the JMS's order id (CSV or JSON lines)"""
    return await _submit(request, response, session, settings, runner, principal,
                         ImportKind.keep_apart_orders)


def _template(kind: ImportKind, name: str) -> Response:
    return Response(svc.template(kind), media_type="text/csv; charset=utf-8",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


_CSV = {200: {"content": {"text/csv": {"schema": {"type": "string"}}},
              "description": "The CSV header and one example row"}}


@router.get("/participants/template", response_class=Response, responses=_CSV)
async def get_participant_import_template(
        principal: Principal = require("participants:write")) -> Response:
    """The participants import template (CSV)"""
    return _template(ImportKind.participants, "participants-import-template.csv")


@router.get("/keep-apart-orders/template", response_class=Response, responses=_CSV)
async def get_keep_apart_import_template(
        principal: Principal = require("keep_apart:write")) -> Response:
    """The keep-apart orders import template (CSV)"""
    return _template(ImportKind.keep_apart_orders, "keep-apart-orders-import-template.csv")


@router.get("", response_model=Page[ImportSummary])
async def list_imports(session: SessionDep, principal: Principal = require("participants:read"),
                       limit: Limit = DEFAULT, cursor: Cursor = None) -> Page[ImportSummary]:
    """Your own imports, oldest first (without their row errors)"""
    rows, nxt = await svc.list_(session=session, principal=principal, limit=limit, cursor=cursor)
    return Page(items=[ImportSummary.of(j) for j in rows], next_cursor=nxt)


@router.get("/{import_id}", response_model=ImportRead, responses=problems(404))
async def get_import(import_id: uuid.UUID, session: SessionDep,
                     principal: Principal = require("participants:read")) -> ImportRead:
    """One of your imports: status, progress, counts and per-row errors (others' are 404)"""
    return ImportRead.of(await svc.get(session=session, principal=principal, import_id=import_id))
