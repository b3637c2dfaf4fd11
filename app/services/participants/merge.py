"""Merging a duplicate participant record into the surviving one: external ids, keep-apart
orders and accounts move; the duplicate is archived as merged (never deleted)."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, RuleViolation
from app.models import KeepApartOrder, Participant, ParticipantExternalId, User
from app.models.keep_apart import KeepApartStatus, ordered_pair
from app.models.pairing import EndReason
from app.security.principal import Principal
from app.services import keep_aparts, pairings
from app.services.common import check_version
from app.services.participants.appliers import bump
from app.services.participants.use_cases import get
from app.services.writer import Writer


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
    # Ids are unique per facility, so both records may hold one (a duplicate made at another
    # facility): the survivor keeps its own; the duplicate's others move to it.
    ext = ParticipantExternalId.__table__.c
    held = {(r.source, r.value) for r in (await session.execute(
        select(ext.source, ext.value).where(ext.participant_id == survivor.id)))}
    for source, value in held:
        await session.execute(delete(ParticipantExternalId).where(
            ext.participant_id == dup.id, ext.source == source, ext.value == value))
    await session.execute(
        update(ParticipantExternalId).where(ParticipantExternalId.participant_id == dup.id)
        .values(participant_id=survivor.id))
    survivor.external_ids = [*(survivor.external_ids or []),
                             *(e for e in dup.external_ids or []
                               if (e["source"], e["value"]) not in held)]
    dup.external_ids = []
    await _move_keep_aparts(session, survivor.id, dup.id, now, principal, w, survivor)
    # The duplicate's pairings end with the record; the survivor's pairings with anyone an
    # order now keeps them apart from end too.
    await pairings.cascade(session, w, dup.id, action="end", reason=EndReason.other.value)
    await pairings.end_keep_apart_conflicts(session, w, survivor.id)
    linked = (await session.execute(select(User.id).where(User.participant_id == dup.id))).scalars()
    for user_id in list(linked):
        w.invalidate_auth(subject=user_id)
    await session.execute(update(User).where(User.participant_id == dup.id)
                          .values(participant_id=survivor.id))
    dup.archived_at = now
    dup.merged_into_id = survivor.id
    bump(dup)
    bump(survivor)
    w.audit("participant.merge", "participant", survivor.id, survivor.facility_id)
    w.audit("participant.merged_away", "participant", dup.id, dup.facility_id)
    w.emit("participant.merged", "participant", survivor.id, facility_id=survivor.facility_id,
           network=survivor.network, data={"duplicate_id": str(dup.id)})
    await w.commit()
    return survivor


async def _move_keep_aparts(session: AsyncSession, survivor: uuid.UUID, dup: uuid.UUID,
                            now: datetime, principal: Principal, w: Writer,
                            scope: Participant) -> None:
    orders = (await session.execute(select(KeepApartOrder).where(or_(
        KeepApartOrder.participant_a_id == dup, KeepApartOrder.participant_b_id == dup)))).scalars()
    for o in list(orders):
        other = o.participant_b_id if o.participant_a_id == dup else o.participant_a_id
        if other == survivor:
            # An order between the two halves of one person no longer means anything.
            if o.status == KeepApartStatus.open:
                keep_aparts.set_status(o, KeepApartStatus.closed,
                                       "merged: both records are one person", principal)
                keep_aparts.record(w, o, "close", scope)
            continue
        a, b = ordered_pair(survivor, other)
        if o.status == KeepApartStatus.open:
            twin = (await session.execute(select(KeepApartOrder.id).where(and_(
                KeepApartOrder.participant_a_id == a, KeepApartOrder.participant_b_id == b,
                KeepApartOrder.status == KeepApartStatus.open.value)))).scalar_one_or_none()
            if twin is not None:
                keep_aparts.set_status(o, KeepApartStatus.closed,
                                       "merged: the survivor already has this order", principal)
                keep_aparts.record(w, o, "close", scope)
        o.participant_a_id, o.participant_b_id = a, b
        w.audit("keep_apart.merge_move", "keep_apart_order", o.id, scope.facility_id)
        o.version += 1
        o.updated_at = now
        await session.flush()
