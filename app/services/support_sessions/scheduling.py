"""Scheduling and closing support sessions: one-to-one within a pairing or a group (a peer
facilitator meets rule 2 through the pairing rules' own checks), group attendance (the network
and keep-apart checks), completion with wellbeing, topics and the confidential note, and the
cancel of ended pairings' sessions (asked for by pairings).

Who may act: a peer supporter on their own pairings' sessions and the groups they
facilitate (filling them only with the people `_addable_by` names); coordinators for their
network and facilities (`SESSION_KEEPERS`).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, Forbidden, NotFound, RuleViolation
from app.models import (
    Facility,
    KeepApartOrder,
    Pairing,
    Participant,
    SessionAttendee,
    SupportSession,
)
from app.models.common import Network
from app.models.keep_apart import KeepApartStatus
from app.models.pairing import PairingStatus
from app.models.support_session import (
    Attendance,
    SessionComplete,
    SessionCreate,
    SessionKind,
    SessionStatus,
)
from app.security.notes import NoteCipher
from app.security.principal import Principal
from app.security.scopes import SESSION_KEEPERS
from app.services import scoping, secrecy
from app.services.common import check_version, flush_unique
from app.services.facilities import settings_of
from app.services.pairing_rules import facilitator_refusals, gather_facilitator_facts
from app.services.support_sessions.reads import get
from app.services.support_sessions.tables import (
    ATTENDEES,
    ORDERS,
    PAIRINGS,
    PEOPLE,
    SESSIONS,
    TOPICS,
)
from app.services.workflow import Transition, step, table
from app.services.writer import Writer

_SCHEDULED = frozenset({SessionStatus.scheduled.value})
SESSION_FLOW = table(
    Transition("complete", _SCHEDULED, SessionStatus.completed.value, SESSION_KEEPERS),
    Transition("cancel", _SCHEDULED, SessionStatus.cancelled.value, SESSION_KEEPERS),
    Transition("no_show", _SCHEDULED, SessionStatus.no_show.value, SESSION_KEEPERS),
)


def _event(w: Writer, type_: str, s: SupportSession) -> None:
    w.emit(type_, "support_session", s.id, facility_id=s.facility_id, network=s.network)


async def schedule(*, session: AsyncSession, settings: Settings, principal: Principal,
                   data: SessionCreate) -> SupportSession:
    if principal.role not in SESSION_KEEPERS:
        raise Forbidden("Your role may not schedule sessions.", code="transition_not_allowed")
    if data.kind == SessionKind.one_to_one:
        pairing = (await session.execute(scoping.pairings(principal).where(
            PAIRINGS.id == data.pairing_id))).scalar_one_or_none()
        if pairing is None:
            raise NotFound("No such pairing.")
        await _pair_may_meet(session, principal, pairing)
        s = SupportSession(kind=data.kind.value, pairing_id=pairing.id,
                           facilitator_id=pairing.supporter_id, facility_id=pairing.facility_id,
                           network=pairing.network, scheduled_at=data.scheduled_at,
                           scheduled_by=principal.actor, location=data.location)
        people = [pairing.supporter_id, pairing.recipient_id]
    else:
        facility = (await session.execute(scoping.facilities(principal).where(
            Facility.id == data.facility_id))).scalar_one_or_none()
        if facility is None:
            raise RuleViolation("The facility is unknown or outside your scope.",
                                code="unknown_facility")
        facilitator_id, user_id = data.facilitator_id, None
        if principal.is_peer:
            if facilitator_id not in (None, principal.participant_id):
                raise Forbidden("A peer supporter schedules only groups they facilitate.",
                                code="transition_not_allowed")
            facilitator_id = principal.participant_id
        if facilitator_id is None:
            user_id = principal.id  # a staff member facilitates
            network = next(iter(sorted(principal.networks)), None)
        else:
            facilitator = (await session.execute(scoping.participants(principal).where(
                PEOPLE.id == facilitator_id))).scalar_one_or_none()
            if facilitator is None:
                raise NotFound("No such participant.")
            await _may_lead(session, settings, principal, facilitator, facility.id)
            network = facilitator.network
        if network is None:
            raise RuleViolation("You hold no network to run a group in.", code="network_not_allowed")
        s = SupportSession(kind=data.kind.value, facilitator_id=facilitator_id,
                           facilitator_user_id=user_id, facility_id=facility.id,
                           network=Network(network).value, scheduled_at=data.scheduled_at,
                           scheduled_by=principal.actor, location=data.location)
        people = [facilitator_id] if facilitator_id else []
    session.add(s)
    await session.flush()
    for pid in people:
        session.add(SessionAttendee.of(s, pid))
    w = Writer(session, principal)
    w.audit("support_session.schedule", "support_session", s.id, s.facility_id)
    _event(w, "support_session.scheduled", s)
    await w.commit()
    return s


async def cancel_for_ended_pairings(session: AsyncSession, w: Writer,
                                    ended: list[Pairing]) -> None:
    """Ended pairings' scheduled sessions are cancelled (with a reason that says no more), in
    one query for all the pairings this transaction ended. Asked for by the pairings
    aggregate; the session rows are written here only."""
    by = {p.id: p.ended_by or "system" for p in ended}
    found = (await session.execute(select(SupportSession).where(
        SESSIONS.pairing_id.in_(list(by)), SESSIONS.status == SessionStatus.scheduled.value)
        .order_by(SESSIONS.id).with_for_update())).scalars().all()
    for s in found:
        _close(s, SessionStatus.cancelled, by[s.pairing_id] if s.pairing_id else "system",
               "the pairing ended")
        w.audit("support_session.cancel", "support_session", s.id, s.facility_id)
        _event(w, "support_session.cancelled", s)


def _close(s: SupportSession, status: SessionStatus, by: str, reason: str | None,
           now: datetime | None = None) -> None:
    """Moves a session to a terminal state, stamped once."""
    now = now or utcnow()
    s.status, s.closed_at, s.closed_by, s.close_reason = status.value, now, by, reason
    s.version += 1
    s.updated_at = now


# --- who may meet -----------------------------------------------------------------------------

async def _may_lead(session: AsyncSession, settings: Settings, principal: Principal,
                    facilitator: Participant, facility_id: uuid.UUID) -> None:
    """DOMAIN rule 2 for a peer who leads a group, through the pairing rules' own checks. The
    first broken rule is named to those who run the program; a peer (who leads only their own
    groups) learns only that they cannot lead one now: an escalation about them is not theirs
    to read, and naming every other rule would name that one by elimination."""
    found = facilitator_refusals(await gather_facilitator_facts(session, settings, facilitator,
                                                                facility_id))
    if found:
        detail = (_CANNOT_LEAD if principal.is_peer
                  else f"A group's facilitator is a supporter who meets every rule. {found[0][1]}")
        raise RuleViolation(detail, code="facilitator_not_eligible")


_CANNOT_LEAD = "You cannot lead a group at the moment; your coordinator can tell you why."

async def _open_orders(session: AsyncSession, *where: Any) -> int:
    return (await session.execute(select(func.count()).select_from(KeepApartOrder.__table__)
                                  .where(ORDERS.status == KeepApartStatus.open.value, *where))
            ).scalar_one()


async def _apart_among(session: AsyncSession, people: list[uuid.UUID]) -> bool:
    """Whether an open keep-apart order stands between any two of these people."""
    if len(people) < 2:
        return False
    return bool(await _open_orders(session, ORDERS.participant_a_id.in_(people),
                                   ORDERS.participant_b_id.in_(people)))


async def _apart_from(session: AsyncSession, person: uuid.UUID,
                      others: list[uuid.UUID]) -> bool:
    """Whether an open keep-apart order stands between this person and any of the others."""
    return bool(await _open_orders(session, or_(
        and_(ORDERS.participant_a_id == person, ORDERS.participant_b_id.in_(others)),
        and_(ORDERS.participant_b_id == person, ORDERS.participant_a_id.in_(others)))))


# What a peer is told when people cannot meet, whatever the reason (DOMAIN rule 3).
_CANNOT_MEET = "These people cannot meet."


def _refuse_apart(principal: Principal, detail: str) -> None:
    raise secrecy.refusal(principal, secrecy.KEEP_APART, detail, hidden=_CANNOT_MEET)


# A peer's pairings that were interrupted: their recipient was perhaps added to the peer's
# groups through the pairing, so that attendance does not make them addable any longer.
_INTERRUPTED = (PairingStatus.paused.value, PairingStatus.ended.value)


def _addable_by(me: uuid.UUID) -> Any:
    """Whom a peer may add to a group they lead: the people they support in an active
    pairing, and the people a coordinator has put in one of the groups they lead (a peer adds
    no one else, so such an attendee who has no paused or ended pairing with the peer was put
    there by a coordinator; one who has could have been added by the peer through that
    pairing, and is not addable by the peer again until a pairing is active)."""
    supported = select(PAIRINGS.recipient_id).where(
        PAIRINGS.supporter_id == me, PAIRINGS.status == PairingStatus.active.value)
    interrupted = select(PAIRINGS.recipient_id).where(
        PAIRINGS.supporter_id == me, PAIRINGS.status.in_(_INTERRUPTED))
    led = select(SESSIONS.id).where(SESSIONS.facilitator_id == me,
                                    SESSIONS.kind == SessionKind.group.value)
    placed = select(ATTENDEES.participant_id).where(
        ATTENDEES.session_id.in_(led), ATTENDEES.participant_id.not_in(interrupted))
    return or_(PEOPLE.id == me, PEOPLE.id.in_(supported), PEOPLE.id.in_(placed))


async def _peer_may_add(session: AsyncSession, principal: Principal, s: SupportSession,
                        participant_id: uuid.UUID) -> None:
    """A peer adds to the group they lead (the session wall lets them reach no other) only
    someone addable by them, of the group's network and facility. Anything else, an unknown
    id included, is `not_eligible` in the words a keep-apart refusal uses, so the peer cannot
    tell which it was."""
    me = principal.participant_id
    found = me is not None and (await session.execute(select(PEOPLE.id).where(
        PEOPLE.id == participant_id, PEOPLE.network == s.network,
        PEOPLE.facility_id == s.facility_id, PEOPLE.archived_at.is_(None),
        _addable_by(me)))).first() is not None
    if not found:
        raise secrecy.NotEligible(_CANNOT_MEET)


async def _pair_may_meet(session: AsyncSession, principal: Principal, pairing: Pairing) -> None:
    """A one-to-one session is scheduled and held only in an active pairing. A pause (leave,
    unavailability, a lapsed certificate, a keep-apart under review) leaves the pairing's
    scheduled sessions as they are, since a short pause should not lose the schedule, but none
    is completed until the pairing resumes; they may be cancelled. An ended pairing's are
    cancelled (`cancel_for_ended_pairings`)."""
    if pairing.status != PairingStatus.active.value:
        raise RuleViolation("A one-to-one session is scheduled and held only in an active "
                            "pairing.", code="pairing_not_active")
    if await _apart_among(session, [pairing.supporter_id, pairing.recipient_id]):
        _refuse_apart(principal, "An open keep-apart order stands between the two.")


async def _attendee_ids(session: AsyncSession, s: SupportSession) -> list[uuid.UUID]:
    return list((await session.execute(select(ATTENDEES.participant_id).where(
        ATTENDEES.session_id == s.id))).scalars())


async def add_attendee(*, session: AsyncSession, principal: Principal, session_id: uuid.UUID,
                       participant_id: uuid.UUID) -> SupportSession:
    s = await get(session=session, principal=principal, session_id=session_id, for_update=True)
    if s.kind != SessionKind.group.value:
        raise RuleViolation("Only group sessions take attendees.", code="not_a_group")
    if s.status != SessionStatus.scheduled.value:
        raise Conflict("Attendees join a scheduled session.", code="invalid_transition")
    if principal.is_peer:
        await _peer_may_add(session, principal, s, participant_id)
    else:
        person = (await session.execute(scoping.participants(principal).where(
            PEOPLE.id == participant_id))).scalar_one_or_none()
        if person is None:
            raise NotFound("No such participant.")
        if person.network != s.network:
            raise RuleViolation("A group never mixes the two networks.", code="network_mismatch")
        if person.facility_id != s.facility_id:
            raise RuleViolation("The person is at another facility.", code="different_facility")
    present = await _attendee_ids(session, s)
    if participant_id in present:
        raise Conflict("Already an attendee.", code="already_attending")
    limit = (await settings_of(session, s.facility_id))["group_size_limit"]
    if len(present) >= limit:
        raise Conflict(f"The group is full ({limit}).", code="group_full")
    if present and await _apart_from(session, participant_id, present):
        _refuse_apart(principal, "An open keep-apart order stands between this person and "
                                 "someone in the group.")
    session.add(SessionAttendee.of(s, participant_id))
    s.version += 1
    s.updated_at = utcnow()
    await flush_unique(session, "Already an attendee.", code="already_attending")
    w = Writer(session, principal)
    w.audit("support_session.add_attendee", "support_session", s.id, s.facility_id)
    await w.commit()
    return s


async def _topics_known(session: AsyncSession, topics: list[str]) -> None:
    if not topics:
        return
    known = set((await session.execute(select(TOPICS.code).where(
        TOPICS.code.in_(topics), TOPICS.active.is_(True)))).scalars())
    unknown = [i for i, t in enumerate(topics) if t not in known]
    if unknown:  # named by position: a topic field is free text a peer typed, never echoed
        raise RuleViolation("Unknown topic(s); admins extend the vocabulary.", code="unknown_topic",
                            errors=[{"field": f"topics[{i}]", "message": "not a known topic",
                                     "type": "unknown_topic"} for i in unknown])


# --- closing ----------------------------------------------------------------------------------

async def transition(*, session: AsyncSession, settings: Settings, cipher: NoteCipher,
                     principal: Principal, session_id: uuid.UUID, action: str,
                     complete: SessionComplete | None = None,
                     reason: str | None = None, if_match: str | None = None) -> SupportSession:
    s = await get(session=session, principal=principal, session_id=session_id, for_update=True)
    check_version(s.version, if_match)
    target = step(SESSION_FLOW, action, s.status, principal.role)
    now = utcnow()
    w = Writer(session, principal)
    if complete is not None:
        await _complete(session, settings, cipher, principal, w, s, complete, now)
    _close(s, SessionStatus(target), principal.actor, reason, now)
    w.audit(f"support_session.{action}", "support_session", s.id, s.facility_id)
    _event(w, f"support_session.{target}", s)
    await w.commit()
    return s


async def _complete(session: AsyncSession, settings: Settings, cipher: NoteCipher,
                    principal: Principal, w: Writer, s: SupportSession, complete: SessionComplete,
                    now: datetime) -> None:
    """What a completion records: attendance, wellbeing, topics and the note (encrypted),
    once the people may still meet and the facilitator may still lead."""
    await _topics_known(session, complete.topics)
    # Re-checked at completion: things change between scheduling and meeting.
    if s.pairing_id is not None:
        pairing = await session.get(Pairing, s.pairing_id)
        await _pair_may_meet(session, principal, pairing)  # type: ignore[arg-type]
    else:
        if s.facilitator_id is not None:
            facilitator = await session.get(Participant, s.facilitator_id)
            await _may_lead(session, settings, principal, facilitator,  # type: ignore[arg-type]
                            s.facility_id)
        if await _apart_among(session, await _attendee_ids(session, s)):
            _refuse_apart(principal, "An open keep-apart order stands between two attendees.")
    attendees = {a.participant_id: a for a in (await session.execute(
        select(SessionAttendee).where(ATTENDEES.session_id == s.id))).scalars()}
    for mark in complete.attendance:
        if mark.participant_id not in attendees:
            raise RuleViolation("Attendance names someone not in this session.",
                                code="not_an_attendee")
        attendees[mark.participant_id].status = mark.status.value
        attendees[mark.participant_id].reason = mark.reason
    for wb in complete.wellbeing:
        if wb.participant_id not in attendees:
            raise RuleViolation("A wellbeing check names someone not in this session.",
                                code="not_an_attendee")
        attendees[wb.participant_id].wellbeing_before = wb.before
        attendees[wb.participant_id].wellbeing_after = wb.after
    if s.kind == SessionKind.one_to_one.value:
        for a in attendees.values():
            if a.status == Attendance.invited.value:
                a.status = Attendance.attended.value
    s.actual_start, s.duration_minutes = complete.actual_start, complete.duration_minutes
    s.location = complete.location or s.location
    s.topics = list(complete.topics)
    if complete.note:
        ct, wrapped, kid = cipher.encrypt(complete.note, s.id.bytes)
        s.note_ciphertext, s.note_wrapped_key, s.note_key_id = ct, wrapped, kid
        s.note_author, s.note_written_at = principal.actor, now
        w.audit("support_session.note_write", "support_session", s.id, s.facility_id)
