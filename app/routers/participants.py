"""/v1/participants: people in the program, with the JMS upsert and merge."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from app.deps import Principal, SessionDep, require
from app.models.common import Network, Page
from app.models.participant import (
    CustodyStatus,
    MergeRequest,
    ParticipantCreate,
    ParticipantRead,
    ParticipantUpdate,
    ParticipantUpsert,
    ProgramRole,
)
from app.routemarks import rebuilt_by
from app.routers.common import (
    AUTHED,
    DEFAULT,
    Cursor,
    Flag,
    IfMatch,
    Instant,
    Limit,
    problems,
    set_etag,
)
from app.services import participants as svc

router = APIRouter(prefix="/v1/participants", tags=["participants"], responses=AUTHED)

SourcePath = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")]
ValuePath = Annotated[str, Path(min_length=1, max_length=128)]


def _out(response: Response, p: object) -> ParticipantRead:
    read = ParticipantRead.of(p)  # type: ignore[arg-type]
    set_etag(response, read.version)
    return read


@router.get("", response_model=Page[ParticipantRead])
async def list_participants(
    session: SessionDep,
    principal: Principal = require("participants:read"),
    limit: Limit = DEFAULT,
    cursor: Cursor = None,
    facility_id: uuid.UUID | None = None,
    network: Network | None = None,
    custody_status: CustodyStatus | None = None,
    program_role: ProgramRole | None = None,
    housing_unit_id: uuid.UUID | None = None,
    q: Annotated[str | None, Query(min_length=2, max_length=100,
                                   description="Name search (legal or preferred)")] = None,
    updated_since: Annotated[Instant | None, Query(description="RFC 3339 with offset")] = None,
    include_archived: Flag = False,
) -> Page[ParticipantRead]:
    filters = svc.ListFilters(
        facility_id=facility_id, network=network, custody_status=custody_status,
        program_role=program_role, housing_unit_id=housing_unit_id, q=q,
        updated_since=updated_since, include_archived=include_archived)
    rows, nxt = await svc.list_(session=session, principal=principal, filters=filters,
                                limit=limit, cursor=cursor)
    return Page(items=[ParticipantRead.of(r) for r in rows], next_cursor=nxt)


def _created(response: Response, p: object) -> ParticipantRead:
    response.headers["Location"] = f"/v1/participants/{p.id}"  # type: ignore[attr-defined]
    return _out(response, p)


async def _created_again(session: AsyncSession, principal: Principal, participant_id: str,
                         response: Response) -> ParticipantRead:
    """A retried create whose first attempt saved the participant and died before answering
    (app/idempotency.py): the participant as the caller reads it now."""
    return _created(response, await svc.read(session=session, principal=principal,
                                             participant_id=uuid.UUID(participant_id)))


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ParticipantRead,
             responses=problems(409), dependencies=[rebuilt_by("participant", _created_again)])
async def create_participant(body: ParticipantCreate, session: SessionDep, response: Response,
                             principal: Principal = require("participants:write"),
                             ) -> ParticipantRead:
    p = await svc.create(session=session, principal=principal, data=body)
    return _created(response, p)


@router.get("/{participant_id}", response_model=ParticipantRead, responses=problems(404))
async def get_participant(participant_id: uuid.UUID, session: SessionDep, response: Response,
                          principal: Principal = require("participants:read"),
                          ) -> ParticipantRead:
    row = await svc.read(session=session, principal=principal, participant_id=participant_id)
    return _out(response, row)


@router.patch("/{participant_id}", response_model=ParticipantRead,
              responses=problems(404, 409, 412))
async def update_participant(participant_id: uuid.UUID, body: ParticipantUpdate,
                             session: SessionDep, response: Response, if_match: IfMatch = None,
                             principal: Principal = require("participants:write"),
                             ) -> ParticipantRead:
    p = await svc.update(session=session, principal=principal, participant_id=participant_id,
                         data=body, if_match=if_match)
    return _out(response, p)


@router.get("/by-external-id/{source}/{value}", response_model=ParticipantRead,
            responses=problems(404))
async def get_participant_by_external_id(
    source: SourcePath, value: ValuePath, session: SessionDep, response: Response,
    principal: Principal = require("participants:read"),
) -> ParticipantRead:
    """The participant a source system's id names (`{source, value}`, as the upsert takes it).
    Never creates anything; an id held by someone outside the caller's facilities or network
    answers 404, exactly as an unknown one."""
    row = await svc.read_by_external_id(session=session, principal=principal, source=source,
                                        value=value)
    return _out(response, row)


@router.put("/by-external-id/{source}/{value}", response_model=ParticipantRead,
            responses={201: {"model": ParticipantRead, "description": "Created"},
                       **problems(404, 409)})
async def upsert_participant_by_external_id(
    source: SourcePath, value: ValuePath, body: ParticipantUpsert, session: SessionDep,
    response: Response, principal: Principal = require("participants:write"),
) -> ParticipantRead:
    """Idempotent upsert for jail systems: the same body twice changes nothing the second time.

    The id is looked up among the caller's records only (external ids are unique within one
    facility's records of one network): an id held outside the caller's facilities or network
    answers exactly as an unused one, 201 with a new record in the caller's scope; no answer
    tells whether the id exists elsewhere."""
    p, created = await svc.upsert_by_external_id(session=session, principal=principal,
                                                 source=source, value=value, data=body)
    if created:
        response.status_code = status.HTTP_201_CREATED
        response.headers["Location"] = f"/v1/participants/{p.id}"
    return _out(response, p)


@router.post("/{participant_id}/archive", response_model=ParticipantRead,
             responses=problems(404, 412))
async def archive_participant(participant_id: uuid.UUID, session: SessionDep,
                              response: Response, if_match: IfMatch = None,
                              principal: Principal = require("participants:write"),
                              ) -> ParticipantRead:
    p = await svc.archive(session=session, principal=principal, participant_id=participant_id,
                          if_match=if_match)
    return _out(response, p)


@router.post("/{participant_id}/merge", response_model=ParticipantRead,
             responses=problems(404, 409, 412))
async def merge_participant(participant_id: uuid.UUID, body: MergeRequest, session: SessionDep,
                            response: Response, if_match: IfMatch = None,
                            principal: Principal = require("participants:write"),
                            ) -> ParticipantRead:
    """Merges the duplicate (body) into this record: its external ids and history move here."""
    p = await svc.merge(session=session, principal=principal, participant_id=participant_id,
                        duplicate_id=body.duplicate_id, if_match=if_match)
    return _out(response, p)
