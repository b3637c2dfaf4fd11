"""Participants: create, read, list, change, upsert by external id, merge, archive.

Custody changes (a housing move, a transfer, a release) arrive as updates; each is recorded
as a domain event in the same transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, null, or_, select
from sqlalchemy import update as sql_update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import (
    Facility,
    HousingUnit,
    KeepApartOrder,
    Participant,
    ParticipantExternalId,
    User,
)
from app.models.common import Network
from app.models.keep_apart import ordered_pair
from app.models.participant import (
    Availability,
    CustodyStatus,
    ExternalId,
    ParticipantCreate,
    ParticipantUpdate,
    ProgramRole,
)
from app.security.principal import Principal
from app.services import scoping
from app.services.common import check_version
from app.services.pagination import keyset_page
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
    row = (await session.execute(
        scoping.participant_rows(principal).where(P.id == participant_id))).first()
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


# --- writing ---------------------------------------------------------------------------------

async def _resolve_location(session: AsyncSession, principal: Principal, *,
                            facility_id: uuid.UUID | None, facility_code: str | None,
                            unit_id: uuid.UUID | None, unit_code: str | None,
                            ) -> tuple[uuid.UUID, uuid.UUID | None]:
    """Facility (within scope) and housing unit (of that facility) in one query."""
    fac, unit = Facility.__table__, HousingUnit.__table__
    want_unit = unit_id is not None or unit_code is not None
    unit_match = and_(unit.c.facility_id == fac.c.id,
                      unit.c.id == unit_id if unit_id else unit.c.code == unit_code)
    stmt = (select(fac.c.id, unit.c.id.label("unit_id")).select_from(fac.outerjoin(unit, unit_match))
            if want_unit else select(fac.c.id, null().label("unit_id")))
    stmt = stmt.where(fac.c.id == facility_id if facility_id else fac.c.code == facility_code,
                      *scoping.facility_clauses(principal))
    row = (await session.execute(stmt)).first()
    if row is None:
        raise RuleViolation("The facility is unknown or outside your scope.",
                            code="unknown_facility",
                            errors=[{"field": "facility_id" if facility_id else "facility_code",
                                     "message": "unknown facility", "type": "unknown_facility"}])
    if want_unit and row.unit_id is None:
        raise RuleViolation("The housing unit is not one of this facility's.",
                            code="unknown_housing_unit",
                            errors=[{"field": "housing_unit_id" if unit_id else "housing_unit_code",
                                     "message": "unknown housing unit for this facility",
                                     "type": "unknown_housing_unit"}])
    return row.id, row.unit_id


def _check_network(principal: Principal, network: Network) -> None:
    if network not in principal.networks:
        raise RuleViolation("You may not write records of this network.",
                            code="network_not_allowed",
                            errors=[{"field": "network", "message": "network not allowed",
                                     "type": "network_not_allowed"}])


def _desired(data: ParticipantCreate | ParticipantUpdate, fields_set: set[str]) -> dict[str, Any]:
    """The column values a body asks for (only the fields it set)."""
    raw = data.model_dump(include=fields_set - {"facility_code", "housing_unit_code",
                                                 "external_ids", "program_roles", "network"})
    out: dict[str, Any] = {}
    for k, v in raw.items():
        out[k] = v.value if hasattr(v, "value") else v
    for k in ("custody_status", "employment_status", "supporter_availability"):
        if k in out and out[k] is None:
            del out[k]  # null never clears a status: an upsert without it leaves it as it is
    if "program_roles" in fields_set:
        roles = set(data.program_roles or [])
        out["is_supporter"] = ProgramRole.supporter in roles
        out["is_recipient"] = ProgramRole.recipient in roles
    return out


async def _add_external_ids(session: AsyncSession, p: Participant, ids: list[ExternalId]) -> bool:
    have = {(e["source"], e["value"]) for e in (p.external_ids or [])}
    new = [e for e in ids if (e.source, e.value) not in have]
    if not new:
        return False
    for e in new:
        session.add(ParticipantExternalId(participant_id=p.id, source=e.source, value=e.value))
    p.external_ids = [*(p.external_ids or []), *({"source": e.source, "value": e.value}
                                                  for e in new)]
    try:
        await session.flush()
    except IntegrityError:
        await session.rollback()
        raise Conflict("An external id is already linked to another participant.",
                       code="external_id_taken") from None
    return True


async def create(*, session: AsyncSession, principal: Principal,
                 data: ParticipantCreate) -> Participant:
    _check_network(principal, data.network)
    facility_id, unit_id = await _resolve_location(
        session, principal, facility_id=data.facility_id, facility_code=data.facility_code,
        unit_id=data.housing_unit_id, unit_code=data.housing_unit_code)
    values = _desired(data, set(data.model_fields_set) | {"program_roles", "languages"})
    values.update(facility_id=facility_id, housing_unit_id=unit_id)
    if data.network == Network.incarcerated and values.get("custody_status") is None:
        values["custody_status"] = CustodyStatus.in_custody.value
    if data.network == Network.staff and values.get("employment_status") is None:
        values["employment_status"] = "employed"
    if values.get("is_supporter") and values.get("supporter_availability") is None:
        values["supporter_availability"] = Availability.active.value
    p = Participant(network=data.network.value, external_ids=[], **values)
    session.add(p)
    await session.flush()
    await _add_external_ids(session, p, data.external_ids)
    w = Writer(session, principal)
    w.audit("participant.create", "participant", p.id, p.facility_id)
    w.emit("participant.created", "participant", p.id, facility_id=p.facility_id,
           network=p.network)
    await w.commit()
    return p


async def _apply(session: AsyncSession, principal: Principal, p: Participant,
                 data: ParticipantCreate | ParticipantUpdate, fields_set: set[str],
                 w: Writer) -> list[str]:
    """Applies the fields a body set; records custody events. Returns the changed fields."""
    values = _desired(data, fields_set)
    if fields_set & {"facility_id", "facility_code", "housing_unit_id", "housing_unit_code"}:
        fid, fcode = data.facility_id, data.facility_code
        if fid is None and fcode is None:
            fid = p.facility_id
        facility_id, unit_id = await _resolve_location(
            session, principal, facility_id=fid, facility_code=fcode,
            unit_id=data.housing_unit_id, unit_code=data.housing_unit_code)
        values["facility_id"] = facility_id
        # A facility move without a unit leaves the person unassigned in the new facility.
        if not fields_set & {"housing_unit_id", "housing_unit_code"}:
            unit_id = p.housing_unit_id if facility_id == p.facility_id else None
        values["housing_unit_id"] = unit_id
    if p.network == Network.incarcerated.value and values.get("employment_status"):
        raise RuleViolation("employment_status is for the staff network.", code="wrong_network_field")
    if p.network == Network.staff.value and values.get("custody_status"):
        raise RuleViolation("custody_status is for the incarcerated network.",
                            code="wrong_network_field")
    changed = {k: v for k, v in values.items() if getattr(p, k) != v}
    if not changed:
        return []
    before_facility, before_status = p.facility_id, p.custody_status
    for k, v in changed.items():
        setattr(p, k, v)
    if p.is_supporter and p.supporter_availability is None:
        p.supporter_availability = Availability.active.value
    ev = {"facility_id": p.facility_id, "network": p.network}
    if "custody_status" in changed and p.custody_status == CustodyStatus.released.value:
        w.emit("participant.released", "participant", p.id, **ev)
    if ("facility_id" in changed and p.facility_id != before_facility) or (
            "custody_status" in changed and p.custody_status == CustodyStatus.transferred.value
            and before_status != p.custody_status):
        w.emit("participant.transferred", "participant", p.id,
               data={"from_facility_id": str(before_facility)}, **ev)
    w.emit("participant.updated", "participant", p.id, data={"changed": sorted(changed)}, **ev)
    await _cascade_pairings(session, w, p, changed, before_facility)
    return sorted(changed)


async def _cascade_pairings(session: AsyncSession, w: Writer, p: Participant,
                            changed: dict[str, Any], before_facility: uuid.UUID) -> None:
    """Custody and availability changes move the person's pairings, in this transaction."""
    from app.services import pairings

    if "custody_status" in changed and p.custody_status == CustodyStatus.released.value:
        await pairings.cascade(session, w, p.id, action="end", reason="released")
    elif p.facility_id != before_facility or (
            "custody_status" in changed and p.custody_status == CustodyStatus.transferred.value):
        await pairings.cascade(session, w, p.id, action="end", reason="transferred")
    elif "employment_status" in changed and p.employment_status == "separated":
        await pairings.cascade(session, w, p.id, action="end", reason="other")
    if "employment_status" in changed and p.employment_status == "on_leave":
        await pairings.cascade(session, w, p.id, action="pause", reason="not_employed",
                               only_as_supporter=True, statuses=("active",))
    if "supporter_availability" in changed and p.supporter_availability != Availability.active:
        await pairings.cascade(session, w, p.id, action="pause", reason="supporter_unavailable",
                               only_as_supporter=True, statuses=("active",))
    if "housing_unit_id" in changed:
        await pairings.pause_keep_apart_conflicts(session, w, p.id)


def _bump(p: Participant) -> None:
    p.version += 1
    p.updated_at = utcnow()


async def update(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                 data: ParticipantUpdate, if_match: str | None) -> Participant:
    p = await get(session=session, principal=principal, participant_id=participant_id,
                  for_update=True)
    check_version(p.version, if_match)
    if p.merged_into_id is not None:
        raise Conflict("This record was merged into another; update that one.",
                       code="participant_merged")
    w = Writer(session, principal)
    changed = await _apply(session, principal, p, data, set(data.model_fields_set), w)
    if not changed:
        return p
    _bump(p)
    w.audit("participant.update", "participant", p.id, p.facility_id)
    await w.commit()
    return p


async def upsert_by_external_id(*, session: AsyncSession, principal: Principal, source: str,
                                value: str, data: ParticipantCreate,
                                _retry: bool = True) -> tuple[Participant, bool]:
    """Idempotent: the same body twice changes nothing and emits nothing the second time."""
    ids = list(data.external_ids)
    if not any(e.source == source and e.value == value for e in ids):
        ids.insert(0, ExternalId(source=source, value=value))
    data = data.model_copy(update={"external_ids": ids})
    ext = ParticipantExternalId.__table__.c
    p = (await session.execute(
        scoping.participants(principal)
        .join(ParticipantExternalId.__table__, ext.participant_id == Participant.id)
        .where(ext.source == source, ext.value == value)
        .with_for_update(of=Participant.__table__)
    )).scalar_one_or_none()
    if p is None:
        taken = (await session.execute(select(ext.participant_id).where(
            ext.source == source, ext.value == value))).first()
        if taken is not None:  # someone outside the caller's scope holds this id
            raise NotFound("No such participant.")
        try:
            return await create(session=session, principal=principal, data=data), True
        except Conflict:
            if not _retry:
                raise
            # A concurrent upsert created it first: take the update path.
            return await upsert_by_external_id(session=session, principal=principal,
                                               source=source, value=value, data=data,
                                               _retry=False)
    if p.network != data.network.value:
        raise RuleViolation("A participant's network cannot change.", code="network_immutable")
    w = Writer(session, principal)
    fields = set(data.model_fields_set) - {"network"}
    changed = await _apply(session, principal, p, data, fields, w)
    added = await _add_external_ids(session, p, data.external_ids)
    if not changed and not added:
        return p, False  # nothing written; the request's transaction simply ends
    if added and not changed:
        w.emit("participant.updated", "participant", p.id, facility_id=p.facility_id,
               network=p.network, data={"changed": ["external_ids"]})
    _bump(p)
    w.audit("participant.upsert", "participant", p.id, p.facility_id)
    await w.commit()
    return p, False


async def archive(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                  if_match: str | None) -> Participant:
    p = await get(session=session, principal=principal, participant_id=participant_id,
                  for_update=True)
    check_version(p.version, if_match)
    if p.archived_at is not None:
        return p
    p.archived_at = utcnow()
    _bump(p)
    w = Writer(session, principal)
    w.audit("participant.archive", "participant", p.id, p.facility_id)
    from app.services import pairings

    await pairings.cascade(session, w, p.id, action="end", reason="other")
    w.emit("participant.archived", "participant", p.id, facility_id=p.facility_id,
           network=p.network)
    await w.commit()
    return p


async def merge(*, session: AsyncSession, principal: Principal, participant_id: uuid.UUID,
                duplicate_id: uuid.UUID, if_match: str | None) -> Participant:
    """The duplicate's external ids, keep-apart orders and accounts move to the survivor;
    the duplicate is archived as merged (never deleted)."""
    if participant_id == duplicate_id:
        raise RuleViolation("A record cannot be merged into itself.", code="merge_self")
    survivor = await get(session=session, principal=principal, participant_id=participant_id,
                         for_update=True)
    check_version(survivor.version, if_match)
    dup = await get(session=session, principal=principal, participant_id=duplicate_id,
                    for_update=True)
    if survivor.network != dup.network:
        raise RuleViolation("Records of different networks cannot be merged.",
                            code="network_mismatch")
    for rec in (survivor, dup):
        if rec.merged_into_id is not None or rec.archived_at is not None:
            raise Conflict("An archived or merged record cannot take part in a merge.",
                           code="participant_archived")
    now = utcnow()
    w = Writer(session, principal)
    await session.execute(
        sql_update(ParticipantExternalId).where(ParticipantExternalId.participant_id == dup.id)
        .values(participant_id=survivor.id))
    survivor.external_ids = [*(survivor.external_ids or []), *(dup.external_ids or [])]
    dup.external_ids = []
    await _move_keep_aparts(session, survivor.id, dup.id, now, principal, w, survivor)
    from app.services import pairings

    # The duplicate's pairings end with the record; the survivor's pairings with anyone an
    # order now keeps them apart from end too.
    await pairings.cascade(session, w, dup.id, action="end", reason="other")
    await pairings.end_keep_apart_conflicts(session, w, survivor.id)
    linked = (await session.execute(select(User.id).where(User.participant_id == dup.id))).scalars()
    for user_id in list(linked):
        w.invalidate_auth(subject=user_id)
    await session.execute(sql_update(User).where(User.participant_id == dup.id)
                          .values(participant_id=survivor.id))
    dup.archived_at = now
    dup.merged_into_id = survivor.id
    _bump(dup)
    _bump(survivor)
    w.audit("participant.merge", "participant", survivor.id, survivor.facility_id)
    w.audit("participant.merged_away", "participant", dup.id, dup.facility_id)
    w.emit("participant.merged", "participant", survivor.id, facility_id=survivor.facility_id,
           network=survivor.network, data={"duplicate_id": str(dup.id)})
    await w.commit()
    return survivor


def _closed(w: Writer, o: KeepApartOrder, scope: Participant) -> None:
    w.audit("keep_apart.close", "keep_apart_order", o.id, scope.facility_id)
    w.emit("keep_apart.closed", "keep_apart_order", o.id, facility_id=scope.facility_id,
           network=scope.network)


async def _move_keep_aparts(session: AsyncSession, survivor: uuid.UUID, dup: uuid.UUID,
                            now: datetime, principal: Principal, w: Writer,
                            scope: Participant) -> None:
    orders = (await session.execute(select(KeepApartOrder).where(or_(
        KeepApartOrder.participant_a_id == dup, KeepApartOrder.participant_b_id == dup)))).scalars()
    for o in list(orders):
        other = o.participant_b_id if o.participant_a_id == dup else o.participant_a_id
        if other == survivor:
            # An order between the two halves of one person no longer means anything.
            if o.status == "open":
                _close(o, now, principal, "merged: both records are one person")
                _closed(w, o, scope)
            continue
        a, b = ordered_pair(survivor, other)
        if o.status == "open":
            twin = (await session.execute(select(KeepApartOrder.id).where(and_(
                KeepApartOrder.participant_a_id == a, KeepApartOrder.participant_b_id == b,
                KeepApartOrder.status == "open")))).scalar_one_or_none()
            if twin is not None:
                _close(o, now, principal, "merged: the survivor already has this order")
                _closed(w, o, scope)
        o.participant_a_id, o.participant_b_id = a, b
        w.audit("keep_apart.merge_move", "keep_apart_order", o.id, scope.facility_id)
        o.version += 1
        o.updated_at = now
        await session.flush()


def _close(o: KeepApartOrder, now: datetime, principal: Principal, reason: str) -> None:
    o.status = "closed"
    o.status_changed_at = now
    o.status_changed_by = principal.actor
    o.status_reason = reason

