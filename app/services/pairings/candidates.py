"""Candidates: the supporters a recipient could be paired with, ranked, through the same rules
as a single pair (`rules.refusals`), in a fixed number of queries whatever the supporters."""

from __future__ import annotations

import uuid

from sqlalchemy import func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.errors import NotFound
from app.models import Pairing
from app.models.keep_apart import KeepApartStatus
from app.models.pairing import HOLDING, CandidateList, PairingStatus
from app.security.principal import Principal
from app.services import certification, scoping
from app.services.facilities import settings_of
from app.services.pairing_rules import (
    ORDERS,
    PAIRINGS,
    PEOPLE,
    SUPPORTER_COLUMNS,
    Facts,
    Refusal,
    SupporterRow,
    in_crisis,
    refusals,
)

# The recipient's one-active-pairing rule is the same for every supporter, and a coordinator
# may override it: it leaves no supporter out.
_OVERRIDABLE = "recipient_already_paired"


async def candidates(*, session: AsyncSession, settings: Settings, principal: Principal,
                     recipient_id: uuid.UUID, limit: int = 25) -> CandidateList:
    """Eligible supporters for a recipient, ranked, with the score's parts; for coordinators
    also the ineligible ones and why. A fixed number of queries, whatever the supporters."""
    recipient = (await session.execute(scoping.participants(principal)
                                       .where(PEOPLE.id == recipient_id))).scalar_one_or_none()
    if recipient is None:
        raise NotFound("No such participant.")
    pool = (PEOPLE.facility_id == recipient.facility_id, PEOPLE.network == recipient.network,
            PEOPLE.is_supporter.is_(True), PEOPLE.archived_at.is_(None),
            PEOPLE.id != recipient.id)
    among = scoping.participants(principal, PEOPLE.id).where(*pool)
    # Only the columns the rules and the ranking read (no names but the preferred one).
    people = [SupporterRow(*row) for row in (await session.execute(
        scoping.participants(principal, *SUPPORTER_COLUMNS).where(*pool)))]
    certs = await certification.certified_among(session, settings, among, recipient.network)
    load: dict[uuid.UUID, int] = dict((await session.execute(
        select(PAIRINGS.supporter_id, func.count())
        .where(PAIRINGS.supporter_id.in_(among), PAIRINGS.status.in_(HOLDING))
        .group_by(PAIRINGS.supporter_id))).all())
    apart: set[uuid.UUID] = set()
    for a, b in (await session.execute(
            select(ORDERS.participant_a_id, ORDERS.participant_b_id).where(
                ORDERS.status == KeepApartStatus.open.value,
                or_(ORDERS.participant_a_id == recipient.id,
                    ORDERS.participant_b_id == recipient.id)))).all():
        apart.add(b if a == recipient.id else a)
    previous = set((await session.execute(select(PAIRINGS.supporter_id).where(
        PAIRINGS.recipient_id == recipient.id,
        PAIRINGS.status == PairingStatus.ended.value))).scalars())
    holding = int((await session.execute(
        select(func.count()).select_from(Pairing.__table__)
        .where(PAIRINGS.recipient_id == recipient.id, PAIRINGS.status.in_(HOLDING))
    )).scalar_one())
    crisis = await in_crisis(session, among)
    facility_cap = (await settings_of(session, recipient.facility_id))["caseload_cap"]
    coordinator = principal.is_coordinator
    languages = set(recipient.languages or [])
    ranked: list[tuple[int, int, str, SupporterRow, dict[str, int]]] = []
    excluded: list[tuple[SupporterRow, int, list[Refusal]]] = []
    for supporter in people:
        cap = min(facility_cap, supporter.caseload_cap or facility_cap)
        cert = certs.get(supporter.id)
        caseload = load.get(supporter.id, 0)
        facts = Facts(supporter=supporter, recipient=recipient,
                      certified=bool(cert and cert.certified), keep_apart=supporter.id in apart,
                      caseload=caseload, cap=cap, recipient_holding=holding,
                      in_crisis=supporter.id in crisis)
        found = [r for r in refusals(facts, override=False) if r[0] != _OVERRIDABLE]
        if found:
            excluded.append((supporter, caseload, found))
            continue
        parts = {
            "shared_language": 3 if languages & set(supporter.languages or []) else 0,
            "same_housing_unit": 2 if supporter.housing_unit_id and
            supporter.housing_unit_id == recipient.housing_unit_id else 0,
            "previous_supporter": 2 if supporter.id in previous else 0,
            "caseload": cap - caseload,
        }
        parts["total"] = sum(parts.values())
        ranked.append((-parts["total"], caseload, str(supporter.id), supporter, parts))
    ranked.sort(key=lambda t: t[:3])
    eligible = [{"supporter_id": s.id, "preferred_name": s.preferred_name, "eligible": True,
                 "caseload": load_, "score": parts} for _, load_, _, s, parts in ranked[:limit]]
    ineligible = [{"supporter_id": s.id, "preferred_name": s.preferred_name, "eligible": False,
                   "caseload": load_, "refusals": [{"code": c, "detail": d} for c, d, _ in found]}
                  for s, load_, found in excluded[:limit]] if coordinator else None
    # One validation of the whole answer (much cheaper than a model per candidate).
    return CandidateList.model_validate({
        "recipient_id": recipient.id, "eligible": eligible, "eligible_total": len(ranked),
        "ineligible": ineligible, "ineligible_total": len(excluded) if coordinator else None})
