"""The pairing use cases the API offers: propose, read one, list, and move one along its
workflow (activate, pause, resume, end), each rule checked again where a move brings the pair
together."""

from __future__ import annotations

import uuid

from sqlalchemy import or_
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import NotFound
from app.models import Pairing
from app.models.pairing import PairingCreate, PairingStatus
from app.security.principal import Principal
from app.services import scoping
from app.services.common import check_version
from app.services.pagination import keyset_page
from app.services.pairing_rules import (
    CHECKED,
    PAIRING_FLOW,
    PAIRINGS,
    gather_facts,
    lock_people,
    refusals,
    refuse,
)
from app.services.pairings.moves import apply, emit, transition_row
from app.services.workflow import step
from app.services.writer import Writer


async def propose(*, session: AsyncSession, settings: Settings, principal: Principal,
                  data: PairingCreate) -> Pairing:
    people = await lock_people(session, principal, data.supporter_id, data.recipient_id)
    supporter, recipient = people[data.supporter_id], people[data.recipient_id]
    override = bool(data.override_reason) and principal.is_coordinator
    found = refusals(await gather_facts(session, settings, supporter, recipient, None),
                     override=override)
    if found:
        refuse(principal, found)
    pairing = Pairing(supporter_id=supporter.id, recipient_id=recipient.id,
                      facility_id=recipient.facility_id, network=recipient.network,
                      proposed_by=principal.actor,
                      override_reason=data.override_reason if override else None)
    session.add(pairing)
    await session.flush()
    session.add(transition_row(pairing, "propose", None, principal, data.override_reason))
    w = Writer(session, principal)
    w.audit("pairing.propose", "pairing", pairing.id, pairing.facility_id)
    if override:
        w.audit("pairing.override_one_active", "pairing", pairing.id, pairing.facility_id)
    emit(w, "pairing.proposed", pairing)
    await w.commit()
    return pairing


async def get(*, session: AsyncSession, principal: Principal, pairing_id: uuid.UUID,
              for_update: bool = False) -> Pairing:
    stmt = scoping.pairings(principal).where(PAIRINGS.id == pairing_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such pairing.")
    return found


async def list_(*, session: AsyncSession, principal: Principal, status: PairingStatus | None,
                participant_id: uuid.UUID | None, facility_id: uuid.UUID | None, limit: int,
                cursor: str | None) -> tuple[list[Pairing], str | None]:
    stmt = scoping.pairings(principal)
    if status:
        stmt = stmt.where(PAIRINGS.status == status.value)
    if participant_id:
        stmt = stmt.where(or_(PAIRINGS.supporter_id == participant_id,
                              PAIRINGS.recipient_id == participant_id))
    if facility_id:
        stmt = stmt.where(PAIRINGS.facility_id == facility_id)
    return await keyset_page(session, stmt, PAIRINGS.id, kind="pairing", limit=limit,
                             cursor=cursor)


async def transition(*, session: AsyncSession, settings: Settings, principal: Principal,
                     pairing_id: uuid.UUID, action: str, reason: str | None = None,
                     override_reason: str | None = None, end_reason: str | None = None,
                     if_match: str | None = None) -> Pairing:
    if override_reason and not principal.is_coordinator:
        override_reason = None
    pairing = await get(session=session, principal=principal, pairing_id=pairing_id,
                        for_update=True)
    check_version(pairing.version, if_match)
    target = step(PAIRING_FLOW, action, pairing.status, principal.role)
    if action in CHECKED:
        people = await lock_people(session, principal, pairing.supporter_id,
                                   pairing.recipient_id)
        override = bool(override_reason or pairing.override_reason)
        found = refusals(await gather_facts(session, settings, people[pairing.supporter_id],
                                            people[pairing.recipient_id], pairing.id),
                         override=override)
        if found:
            refuse(principal, found)
    w = Writer(session, principal)
    if override_reason and not pairing.override_reason:
        pairing.override_reason = override_reason
        w.audit("pairing.override_one_active", "pairing", pairing.id, pairing.facility_id)
    apply(session, w, pairing, action, target, principal,
          reason=end_reason if action == "end" else reason, note=reason)
    w.audit(f"pairing.{action}", "pairing", pairing.id, pairing.facility_id)
    await w.commit()
    return pairing
