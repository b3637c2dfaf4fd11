"""Disclosures: what left a confidential session (risk to self or others, abuse) and to
whom, recorded from a session that was held (completed); a risk disclosure opens a crisis
escalation in the same transaction. A participant's ledger is read by their supporter, their
coordinators and clinicians."""

from __future__ import annotations

import uuid

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import Conflict, NotFound, RuleViolation
from app.models import Disclosure, Pairing
from app.models.escalation import Category, EscalationCreate, Tier
from app.models.support_session import DisclosureCategory, DisclosureCreate, SessionStatus
from app.security.principal import Principal
from app.services import escalations, scoping
from app.services.support_sessions.reads import get
from app.services.support_sessions.tables import (
    ATTENDEES,
    DISCLOSURES,
    PAIRINGS,
    PEOPLE,
    SUPPORTING,
)
from app.services.writer import Writer

# The disclosures that open a crisis escalation, as what.
_RISK: dict[DisclosureCategory, tuple[Category, Tier]] = {
    DisclosureCategory.suicide_risk: (Category.suicide_risk, Tier.high),
    DisclosureCategory.self_harm: (Category.self_harm, Tier.high),
    DisclosureCategory.harm_to_others: (Category.violence_threat, Tier.high),
}


async def record_disclosure(*, session: AsyncSession, principal: Principal,
                            session_id: uuid.UUID, data: DisclosureCreate) -> Disclosure:
    s = await get(session=session, principal=principal, session_id=session_id, for_update=True)
    if s.status != SessionStatus.completed.value:
        # Said in a session that took place: a scheduled one may yet be cancelled or missed.
        # A risk seen now is raised as an escalation, which needs no session.
        raise Conflict("A disclosure is recorded from a completed session; complete it first, "
                       "or raise a crisis escalation (POST /v1/escalations) for a risk now.",
                       code="session_not_held")
    present = set((await session.execute(select(ATTENDEES.participant_id).where(
        ATTENDEES.session_id == s.id))).scalars())
    if data.participant_id not in present:
        raise RuleViolation("A disclosure is about someone in the session.",
                            code="not_an_attendee")
    d = Disclosure(session_id=s.id, participant_id=data.participant_id,
                   category=data.category.value, passed_to=data.passed_to,
                   passed_at=data.passed_at, recorded_by=principal.actor)
    session.add(d)
    await session.flush()
    w = Writer(session, principal)
    w.audit("disclosure.record", "disclosure", d.id, s.facility_id)
    risk = _RISK.get(data.category)
    if risk is not None:
        # A risk disclosure opens a crisis escalation in the same transaction.
        category, tier = risk
        esc = await escalations.raise_(
            session=session, principal=principal,
            data=EscalationCreate(participant_id=data.participant_id, category=category,
                                  tier=tier, description="Raised from a disclosure in a support "
                                  "session; see the disclosure ledger."),
            w=w, commit=False)
        d.escalation_id = esc.id
    w.emit("disclosure.recorded", "disclosure", d.id, facility_id=s.facility_id,
           network=s.network)
    await w.commit()
    return d


async def disclosures_of(*, session: AsyncSession, principal: Principal,
                         participant_id: uuid.UUID) -> list[Disclosure]:
    """The ledger of what left confidential sessions about this person: for their
    supporter, their coordinator (network and facility) and clinicians."""
    if principal.is_peer:
        supports = (await session.execute(select(func.count()).select_from(Pairing.__table__)
                                          .where(PAIRINGS.supporter_id == principal.participant_id,
                                                 PAIRINGS.recipient_id == participant_id,
                                                 PAIRINGS.status.in_(SUPPORTING)))
                    ).scalar_one()
        if not supports:
            raise NotFound("No such participant.")
    else:
        found = (await session.execute(scoping.participants(principal, PEOPLE.id).where(
            PEOPLE.id == participant_id))).first()
        if found is None:
            raise NotFound("No such participant.")
    rows = await session.execute(select(Disclosure).where(
        DISCLOSURES.participant_id == participant_id)
        .order_by(DISCLOSURES.passed_at, DISCLOSURES.id))
    return list(rows.scalars())
