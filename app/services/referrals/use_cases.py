"""Referring a person for support and working the referral: `refer` (a high-risk reason opens
a crisis escalation in the same transaction, as a risk disclosure does) and `transition` (one
step of REFERRAL_FLOW: triage, match to a pairing or a group session, decline, withdraw), each
with its audit row and thin event, committed once."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, Forbidden, NotFound, RuleViolation
from app.models import Participant, ParticipantExternalId, Referral, SessionAttendee
from app.models.escalation import EscalationCreate
from app.models.pairing import HOLDING
from app.models.referral import (
    URGENCY_RANK,
    ReferralCreate,
    ReferralDecline,
    ReferralMatch,
    ReferralSource,
    ReferralTriage,
    ReferralWithdraw,
)
from app.models.support_session import SessionKind, SessionStatus
from app.security.principal import Principal
from app.security.scopes import REFERRAL_TRIAGERS
from app.services import escalations, scoping
from app.services.common import check_version
from app.services.referrals.rules import (
    REFERRAL_FLOW,
    STAMPS,
    escalation_for,
    person_refusal,
    source_for,
    withdraw_refusal,
)
from app.services.referrals.views import get
from app.services.workflow import step
from app.services.writer import Writer

PEOPLE = scoping.P
PAIRINGS = scoping.PR
SESSIONS = scoping.S
EXTERNAL_IDS = ParticipantExternalId.__table__.c
ATTENDEES = SessionAttendee.__table__.c
MERGE_HOPS = 5
_NO_PERSON = "No such participant."


async def _named(session: AsyncSession, data: ReferralCreate) -> Participant | None:
    """The person the referral names, by our id or another system's, following merges."""
    if data.participant_id is not None:
        person = await session.get(Participant, data.participant_id)
    else:
        assert data.external_id is not None  # ReferralCreate: one of the two
        person = (await session.execute(
            select(Participant).join(ParticipantExternalId,
                                     EXTERNAL_IDS.participant_id == PEOPLE.id)
            .where(EXTERNAL_IDS.source == data.external_id.source,
                   EXTERNAL_IDS.value == data.external_id.value))).scalar_one_or_none()
    for _ in range(MERGE_HOPS):
        if person is None or person.merged_into_id is None:
            break
        person = await session.get(Participant, person.merged_into_id)
    return person


async def _may_refer(session: AsyncSession, principal: Principal, person: Participant,
                     source: ReferralSource) -> bool:
    """Whom a caller may refer: a person inside their walls; a peer supporter someone they
    support (`peer`), or anyone of their network at their facilities who asked them
    (`self_via_peer`), whom they otherwise cannot see."""
    if not principal.is_peer:
        return (await session.execute(scoping.participants(principal, PEOPLE.id).where(
            PEOPLE.id == person.id))).first() is not None
    if source == ReferralSource.self_via_peer:
        return (principal.sees_facility(person.facility_id)
                and person.network in {n.value for n in principal.networks})
    return principal.participant_id is not None and (await session.execute(
        select(PAIRINGS.id).where(PAIRINGS.supporter_id == principal.participant_id,
                                  PAIRINGS.recipient_id == person.id,
                                  PAIRINGS.status.in_(HOLDING)))).first() is not None


async def refer(*, session: AsyncSession, principal: Principal,
                data: ReferralCreate) -> Referral:
    source = source_for(principal.role, data.source)
    person = await _named(session, data)
    if person is None or not await _may_refer(session, principal, person, source):
        raise NotFound(_NO_PERSON)
    refused = person_refusal(person)
    if refused is not None:
        raise RuleViolation(refused, code="person_not_present")
    now = utcnow()
    r = Referral(facility_id=person.facility_id, network=person.network,
                 participant_id=person.id, housing_unit_id=person.housing_unit_id,
                 source=source.value, reason_category=data.reason_category.value,
                 urgency=data.urgency.value, urgency_rank=URGENCY_RANK[data.urgency.value],
                 summary=data.summary, received_at=now, referred_by=principal.actor,
                 updated_at=now)
    session.add(r)
    await session.flush()
    w = Writer(session, principal)
    # First: the Idempotency-Key claim records the first `.create` as what this write made.
    w.audit("referral.create", "referral", r.id, r.facility_id)
    risk = escalation_for(r.reason_category)
    if risk is not None:
        category, tier = risk
        # Raised by the referrer, at the person's facility, naming them as the referrer did
        # (the raise finds the same person): a referrer who cannot see the person (a
        # self-referral through a peer) holds a blind raise's receipt of what they gave.
        esc = await escalations.raise_(
            session=session, principal=principal,
            data=EscalationCreate(participant_id=data.participant_id,
                                  external_id=data.external_id, category=category, tier=tier,
                                  facility_id=person.facility_id,
                                  description="Raised from a referral for peer support; see "
                                              "the referral."),
            w=w, commit=False)
        r.escalation_id = esc.id
    _emit(w, "referral.received", r)
    await w.commit()
    return r


def _emit(w: Writer, type_: str, r: Referral) -> None:
    """Thin: the referral's id, facility, network, and its new status."""
    w.emit(type_, "referral", r.id, facility_id=r.facility_id, network=r.network,
           data={"status": r.status})


async def _match_target(session: AsyncSession, principal: Principal, r: Referral,
                        body: ReferralMatch) -> None:
    """A pairing in which the person is the recipient and which has not ended, or a group
    session (not cancelled or missed) the person is on the list of; inside the caller's walls."""
    if body.pairing_id is not None:
        p = (await session.execute(scoping.pairings(principal, PAIRINGS.id, PAIRINGS.status)
                                   .where(PAIRINGS.id == body.pairing_id,
                                          PAIRINGS.recipient_id == r.participant_id))).first()
        if p is None:
            raise RuleViolation("No pairing of this person's as recipient has that id.",
                                code="match_not_for_person",
                                errors=[{"field": "pairing_id", "message": "not this person's",
                                         "type": "match_not_for_person"}])
        if p.status not in ("proposed", *HOLDING):
            raise Conflict("The pairing has ended.", code="match_closed")
        r.matched_pairing_id = body.pairing_id
        return
    s = (await session.execute(scoping.support_sessions(principal, SESSIONS.id, SESSIONS.status)
                               .where(SESSIONS.id == body.session_id,
                                      SESSIONS.kind == SessionKind.group.value,
                                      SESSIONS.id.in_(select(ATTENDEES.session_id).where(
                                          ATTENDEES.participant_id == r.participant_id))))
         ).first()
    if s is None:
        raise RuleViolation("No group session with this person on its list has that id (add "
                            "them to the group first).", code="match_not_for_person",
                            errors=[{"field": "session_id", "message": "not this person's",
                                     "type": "match_not_for_person"}])
    if s.status not in (SessionStatus.scheduled.value, SessionStatus.completed.value):
        raise Conflict("The group session was cancelled or did not take place.",
                       code="match_closed")
    r.matched_session_id = body.session_id


async def transition(*, session: AsyncSession, principal: Principal, referral_id: uuid.UUID,
                     action: str, body: Any, if_match: str | None) -> Referral:
    """One step of REFERRAL_FLOW, its state's stamp written once, its audit row and event."""
    r = await get(session=session, principal=principal, referral_id=referral_id,
                  for_update=True)
    check_version(r.version, if_match)
    target = step(REFERRAL_FLOW, action, r.status, principal.role)
    if action == "withdraw":
        refused = withdraw_refusal(works_queue=principal.role in REFERRAL_TRIAGERS,
                                   is_referrer=r.referred_by == principal.actor)
        if refused is not None:
            raise Forbidden(refused, code="not_the_referrer")
    now = utcnow()
    if isinstance(body, ReferralTriage) and body.urgency is not None:
        r.urgency, r.urgency_rank = body.urgency.value, URGENCY_RANK[body.urgency.value]
    elif isinstance(body, ReferralMatch):
        await _match_target(session, principal, r, body)
    elif isinstance(body, ReferralDecline):
        r.decline_reason, r.decline_note = body.reason.value, body.note
    elif isinstance(body, ReferralWithdraw):
        r.withdraw_reason = body.reason
    stamp = STAMPS[target]
    if getattr(r, f"{stamp}_at") is None:  # stamped once (rule 6)
        setattr(r, f"{stamp}_at", now)
        setattr(r, f"{stamp}_by", principal.actor)
    r.status = target
    r.version += 1
    r.updated_at = now
    w = Writer(session, principal)
    w.audit(f"referral.{action}", "referral", r.id, r.facility_id)
    _emit(w, f"referral.{stamp}", r)
    await w.commit()
    return r
