"""Participants' use cases: get, read, list, create, update, upsert by external id, archive.

Custody changes (a housing move, a transfer, a release) arrive as updates; each is recorded
as a domain event in the same transaction, and moves the person's pairings.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, NotFound
from app.models import Participant, ParticipantExternalId
from app.models.common import Network
from app.models.pairing import EndReason
from app.models.participant import CustodyStatus, ParticipantCreate, ParticipantUpdate, ProgramRole
from app.security.principal import Principal
from app.services import pairings, scoping
from app.services.common import check_version
from app.services.pagination import keyset_page
from app.services.participants import locations
from app.services.participants.appliers import RouteChanges, bump
from app.services.participants.decision import LOCATION_FIELDS
from app.services.participants.locations import Locations
from app.services.scoping import P
from app.services.writer import Writer


@dataclass
class ListFilters:
    facility_id: uuid.UUID | None = None
    network: Network | None = None
    custody_status: CustodyStatus | None = None
    program_role: ProgramRole | None = None
    housing_unit_id: uuid.UUID | None = None
    q: str | None = None
    updated_since: datetime | None = None
    include_archived: bool = False


async def get(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
              for_update: bool = False) -> Participant:
    stmt = scoping.participants(principal).where(Participant.id == participant_id)
    if for_update:
        stmt = stmt.with_for_update()
    row = (await session.execute(stmt)).scalar_one_or_none()
    if row is None:
        raise NotFound("No such participant.")
    return row


async def read(*, session: AsyncSession, principal: Principal,
               participant_id: uuid.UUID) -> Row[Any]:
    """One participant as a Core row (the read path: no ORM object is built)."""
    wall = scoping.participant_wall(principal)
    row = None if wall.nothing else (await session.execute(
        scoping.participant_row_by_id(wall.shape),
        {**wall.params, "participant_id": participant_id})).first()
    if row is None:
        raise NotFound("No such participant.")
    return row


async def read_by_external_id(*, session: AsyncSession, principal: Principal, source: str,
                              value: str) -> Row[Any]:
    """The participant an external id names, as a Core row, behind the participant wall: an id
    held by someone outside it reads exactly as an unknown one. Never writes anything."""
    x = ParticipantExternalId.__table__.c
    held_by = select(x.participant_id).where(x.source == source, x.value == value)
    row = (await session.execute(
        scoping.participant_rows(principal).where(P.id.in_(held_by)))).first()
    if row is None:
        raise NotFound("No such participant.")
    return row


async def list_(*, session: AsyncSession, principal: Principal, filters: ListFilters,
                limit: int, cursor: str | None) -> tuple[list[Row[Any]], str | None]:
    stmt = scoping.participant_rows(principal)
    f = filters
    if f.facility_id:
        stmt = stmt.where(P.facility_id == f.facility_id)
    if f.network:
        stmt = stmt.where(P.network == f.network.value)
    if f.custody_status:
        stmt = stmt.where(P.custody_status == f.custody_status.value)
    if f.program_role == ProgramRole.supporter:
        stmt = stmt.where(P.is_supporter.is_(True))
    elif f.program_role == ProgramRole.recipient:
        stmt = stmt.where(P.is_recipient.is_(True))
    if f.housing_unit_id:
        stmt = stmt.where(P.housing_unit_id == f.housing_unit_id)
    if f.updated_since:
        stmt = stmt.where(P.updated_at >= f.updated_since)
    if not f.include_archived:
        stmt = stmt.where(P.archived_at.is_(None))
    if f.q:
        pattern = f"%{_escape(f.q)}%"
        stmt = stmt.where(or_(P.legal_name.ilike(pattern, escape="\\"),
                              P.preferred_name.ilike(pattern, escape="\\")))
    return await keyset_page(session, stmt, P.id, kind="participant", limit=limit, cursor=cursor,
                             rows=True)


def _escape(q: str) -> str:
    return q.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def create(*, session: AsyncSession, principal: Principal,
                 data: ParticipantCreate) -> Participant:
    w = Writer(session, principal)
    changes = RouteChanges(session, principal, w)
    await changes.load([(e.source, e.value) for e in data.external_ids], [data])
    row = changes.create(data)
    await changes.flush()
    await w.commit()
    return Participant(**row)


async def update(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                 data: ParticipantUpdate, if_match: str | None) -> Participant:
    p = await get(session=session, principal=principal, participant_id=participant_id,
                  for_update=True)
    check_version(p.version, if_match)
    if p.merged_into_id is not None:
        raise Conflict("This record was merged into another; update that one.",
                       code="participant_merged")
    w = Writer(session, principal)
    changes = RouteChanges(session, principal, w)
    fields = set(data.model_fields_set)
    if fields & LOCATION_FIELDS:
        ids, codes = locations.wanted(data, p.facility_id)
        changes.locations = await Locations.load(session, principal, ids=ids, codes=codes)
    if not changes.update(p, data, fields):
        return p
    await changes.flush()
    await w.commit()
    return p


async def upsert_by_external_id(*, session: AsyncSession, principal: Principal, source: str,
                                value: str, data: ParticipantCreate,
                                _retry: bool = True) -> tuple[Participant | Row[Any], bool]:
    """Idempotent: the same body twice changes nothing and emits nothing the second time."""
    w = Writer(session, principal)
    changes = RouteChanges(session, principal, w)
    await changes.load([(source, value), *((e.source, e.value) for e in data.external_ids)], [data])
    found, outcome = changes.upsert(source, value, data)
    if outcome == "unchanged" and not isinstance(found, dict):
        return found, False  # nothing written; the request's transaction simply ends
    try:
        await changes.flush()
    except Conflict:
        if not _retry or outcome != "created":
            raise
        # A concurrent upsert created it first: take the update path.
        return await upsert_by_external_id(session=session, principal=principal, source=source,
                                           value=value, data=data, _retry=False)
    await w.commit()
    if isinstance(found, dict):
        return Participant(**found), True
    return changes.updated[found.id], False


async def archive(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                  if_match: str | None) -> Participant:
    p = await get(session=session, principal=principal, participant_id=participant_id,
                  for_update=True)
    check_version(p.version, if_match)
    if p.archived_at is not None:
        return p
    p.archived_at = utcnow()
    bump(p)
    w = Writer(session, principal)
    w.audit("participant.archive", "participant", p.id, p.facility_id)
    await pairings.cascade(session, w, p.id, action="end", reason=EndReason.other.value)
    w.emit("participant.archived", "participant", p.id, facility_id=p.facility_id,
           network=p.network)
    await w.commit()
    return p
