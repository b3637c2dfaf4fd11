"""Support sessions: scheduling, attendance (with the network and keep-apart checks for
groups), completion with wellbeing and the confidential note, disclosures, pairing outcomes.

Who may act: a peer supporter on their own pairings' sessions and the groups they
facilitate; coordinators for their network and facilities. Note text: its author, and a
clinician when the session is linked to a disclosure (or, once they exist, an escalation);
every read of a note's text, and every refused attempt, is audited.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from functools import lru_cache
from typing import Any

from sqlalchemy import JSON, Integer, and_, bindparam, case, cast, func, literal_column, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, Forbidden, NotFound, RuleViolation
from app.models import (
    Disclosure,
    Facility,
    KeepApartOrder,
    Pairing,
    SessionAttendee,
    SessionTopic,
    SupportSession,
)
from app.models.common import Network
from app.models.escalation import EscalationCreate
from app.models.support_session import (
    Attendance,
    AttendeeRead,
    DisclosureCreate,
    NoteRead,
    PairingSummary,
    SessionComplete,
    SessionCreate,
    SessionKind,
    SessionRead,
    SessionStatus,
    TopicCreate,
)
from app.security.notes import NoteCipher
from app.security.principal import Principal
from app.security.scopes import SESSION_KEEPERS
from app.services import certification, escalations, scoping, secrecy
from app.services.audit import AuditEntry, append
from app.services.common import check_version, flush_unique
from app.services.facilities import settings_of
from app.services.pagination import decode_uuid_cursor, encode_cursor
from app.services.workflow import Transition, step, table
from app.services.writer import Writer

S = SupportSession.__table__.c
A = SessionAttendee.__table__.c
PR = Pairing.__table__.c
K = KeepApartOrder.__table__.c
P = scoping.P
_ACTORS = SESSION_KEEPERS
_St = SessionStatus
SESSION_FLOW = table(
    Transition("complete", frozenset({_St.scheduled.value}), _St.completed.value, _ACTORS),
    Transition("cancel", frozenset({_St.scheduled.value}), _St.cancelled.value, _ACTORS),
    Transition("no_show", frozenset({_St.scheduled.value}), _St.no_show.value, _ACTORS),
)


def sessions(principal: Principal) -> Any:
    """The scoped base query (the walls: `scoping.support_session_wall`)."""
    return scoping.support_sessions(principal)


async def get(*, session: AsyncSession, principal: Principal, session_id: uuid.UUID,
              for_update: bool = False) -> SupportSession:
    stmt = sessions(principal).where(S.id == session_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such support session.")
    return found


async def to_reads(session: AsyncSession, items: list[SupportSession]) -> list[SessionRead]:
    """Read models of sessions just loaded or written, with their attendees in one more query
    (single-record answers; the list reads through `list_`)."""
    ids = [s.id for s in items]
    by_session: dict[uuid.UUID, list[AttendeeRead]] = {i: [] for i in ids}
    if ids:
        for a in await session.execute(
                select(A.session_id, A.participant_id, A.status, A.reason, A.wellbeing_before,
                       A.wellbeing_after).where(A.session_id.in_(ids)).order_by(A.id)):
            by_session[a.session_id].append(AttendeeRead(
                participant_id=a.participant_id, status=a.status, reason=a.reason,
                wellbeing_before=a.wellbeing_before, wellbeing_after=a.wellbeing_after))
    return [SessionRead(
        id=s.id, kind=SessionKind(s.kind), pairing_id=s.pairing_id, facilitator_id=s.facilitator_id,
        facilitator_user_id=s.facilitator_user_id, facility_id=s.facility_id,
        network=Network(s.network), status=SessionStatus(s.status), scheduled_at=s.scheduled_at,
        scheduled_by=s.scheduled_by, actual_start=s.actual_start,
        duration_minutes=s.duration_minutes, location=s.location, topics=list(s.topics or []),
        closed_at=s.closed_at, closed_by=s.closed_by, close_reason=s.close_reason,
        has_note=s.note_ciphertext is not None, attendees=by_session[s.id], version=s.version,
        updated_at=s.updated_at) for s in items]


# The list: one prebuilt statement per shape (which filters, which walls apply), its values
# bound per request; plain rows, and each session's attendees aggregated in the same statement
# as JSON, so a page is one round trip and no ORM object or read model is built per row (the
# router writes the rows as they are: routers.common.json_page). `support_session` in the
# subqueries is the outer statement's table.
_ATTENDEES = {
    "postgresql": (
        "(SELECT coalesce(json_agg(json_build_object('participant_id', a.participant_id, "
        "'status', a.status, 'reason', a.reason, 'wellbeing_before', a.wellbeing_before, "
        "'wellbeing_after', a.wellbeing_after) ORDER BY a.id), '[]'::json) "
        "FROM session_attendee AS a WHERE a.session_id = support_session.id)"),
    # SQLite before 3.44 has no ORDER BY inside an aggregate: the ordered subquery is not
    # flattened into an aggregate query, so json_group_array sees its rows in that order.
    "sqlite": (
        "(SELECT json_group_array(json(x)) FROM (SELECT json_object('participant_id', "
        "a.participant_id, 'status', a.status, 'reason', a.reason, 'wellbeing_before', "
        "a.wellbeing_before, 'wellbeing_after', a.wellbeing_after) AS x "
        "FROM session_attendee AS a WHERE a.session_id = support_session.id ORDER BY a.id))"),
}
_LIST_COLUMNS = [S.id, S.kind, S.pairing_id, S.facilitator_id, S.facilitator_user_id,
                 S.facility_id, S.network, S.status, S.scheduled_at, S.scheduled_by,
                 S.actual_start, S.duration_minutes, S.location, S.topics, S.closed_at,
                 S.closed_by, S.close_reason, S.note_ciphertext.is_not(None).label("has_note")]
# The list's items are these, in SessionRead's field order (the router writes them as they
# are, without the model: see routers.common.json_page).
_LIST_FIELDS = (*(c.name for c in _LIST_COLUMNS), "attendees", "version", "updated_at")
_FILTERS: dict[str, Any] = {
    "participant_id": lambda: S.id.in_(select(A.session_id).where(
        A.participant_id == bindparam("participant_id"))),
    "pairing_id": lambda: S.pairing_id == bindparam("pairing_id"),
    "facilitator_id": lambda: S.facilitator_id == bindparam("facilitator_id"),
    "facility_id": lambda: S.facility_id == bindparam("facility_id"),
    "kind": lambda: S.kind == bindparam("kind"),
    "status": lambda: S.status == bindparam("status"),
    "scheduled_from": lambda: S.scheduled_at >= bindparam("scheduled_from"),
    "scheduled_to": lambda: S.scheduled_at < bindparam("scheduled_to"),
    "updated_since": lambda: S.updated_at >= bindparam("updated_since"),
}


@lru_cache(maxsize=256)
def _list_statement(dialect: str, wall: frozenset[str], keys: tuple[str, ...],
                    after: bool) -> Any:
    """The walls of `scoping.support_session_wall` with placeholders, one statement per
    shape."""
    stmt = select(*_LIST_COLUMNS, literal_column(_ATTENDEES[dialect], JSON).label("attendees"),
                  S.version, S.updated_at,  # SessionRead's fields in its order: _LIST_FIELDS
                  ).where(*scoping.Wall("support_session", wall).clauses(bound=False))
    for key in keys:
        stmt = stmt.where(_FILTERS[key]())
    if after:
        stmt = stmt.where(S.id > bindparam("after"))
    return stmt.order_by(S.id).limit(bindparam("lim", type_=Integer))


async def list_(*, session: AsyncSession, principal: Principal, filters: dict[str, Any],
                limit: int, cursor: str | None) -> tuple[list[dict[str, Any]], str | None]:
    """A page of sessions as plain dicts in SessionRead's shape and field order (attendees
    included)."""
    after = decode_uuid_cursor(cursor, "support_session")
    wall = scoping.support_session_wall(principal)
    if wall.nothing:
        return [], None
    params: dict[str, Any] = {**wall.params, "lim": limit + 1}
    keys = tuple(k for k in _FILTERS if filters.get(k))
    for k in keys:
        v = filters[k]
        params[k] = v.value if k in ("kind", "status") else v
    if after is not None:
        params["after"] = after
    stmt = _list_statement(session.bind.dialect.name,  # type: ignore[union-attr]
                           wall.shape, keys, after is not None)
    items = [dict(zip(_LIST_FIELDS, row, strict=True))
             for row in await session.execute(stmt, params)]
    if session.bind.dialect.name == "sqlite":  # type: ignore[union-attr]
        for item in items:  # SQLite keeps uuids as 32 hex digits; the answer hyphenates them
            for a in item["attendees"]:
                a["participant_id"] = str(uuid.UUID(a["participant_id"]))
    nxt = encode_cursor("support_session", items[limit - 1]["id"]) if len(items) > limit \
        else None
    return items[:limit], nxt


def _event(w: Writer, type_: str, s: SupportSession) -> None:
    w.emit(type_, "support_session", s.id, facility_id=s.facility_id, network=s.network)


async def schedule(*, session: AsyncSession, settings: Settings, principal: Principal,
                   data: SessionCreate) -> SupportSession:
    if principal.role not in _ACTORS:
        raise Forbidden("Your role may not schedule sessions.", code="transition_not_allowed")
    if data.kind == SessionKind.one_to_one:
        pairing = (await session.execute(scoping.pairings(principal).where(
            PR.id == data.pairing_id))).scalar_one_or_none()
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
            f = (await session.execute(scoping.participants(principal).where(
                P.id == facilitator_id))).scalar_one_or_none()
            if f is None:
                raise NotFound("No such participant.")
            state = await certification.state_of(session, settings, f)
            if not f.is_supporter or not state.certified or f.facility_id != facility.id:
                raise RuleViolation("A group's facilitator is a certified supporter of this "
                                    "facility, or a staff member.", code="facilitator_not_eligible")
            network = f.network
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
        session.add(SessionAttendee(session_id=s.id, participant_id=pid))
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
        S.pairing_id.in_(list(by)), S.status == _St.scheduled.value).order_by(S.id)
        .with_for_update())).scalars().all()
    for s in found:
        _close(s, _St.cancelled, by[s.pairing_id] if s.pairing_id else "system",
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


async def _apart_among(session: AsyncSession, people: list[uuid.UUID]) -> bool:
    """Whether an open keep-apart order stands between any two of these people."""
    if len(people) < 2:
        return False
    found = (await session.execute(select(func.count()).select_from(KeepApartOrder.__table__)
                                   .where(K.status == "open", K.participant_a_id.in_(people),
                                          K.participant_b_id.in_(people)))).scalar_one()
    return bool(found)


def _refuse_apart(principal: Principal, detail: str) -> None:
    raise secrecy.refusal(principal, secrecy.KEEP_APART, detail,
                          hidden="These people cannot meet.")


async def _pair_may_meet(session: AsyncSession, principal: Principal, pairing: Pairing) -> None:
    if pairing.status not in ("active", "paused"):
        raise RuleViolation("A one-to-one session needs an active or paused pairing.",
                            code="pairing_not_active")
    if await _apart_among(session, [pairing.supporter_id, pairing.recipient_id]):
        _refuse_apart(principal, "An open keep-apart order stands between the two.")


async def add_attendee(*, session: AsyncSession, principal: Principal, session_id: uuid.UUID,
                       participant_id: uuid.UUID) -> SupportSession:
    s = await get(session=session, principal=principal, session_id=session_id, for_update=True)
    if s.kind != SessionKind.group.value:
        raise RuleViolation("Only group sessions take attendees.", code="not_a_group")
    if s.status != _St.scheduled.value:
        raise Conflict("Attendees join a scheduled session.", code="invalid_transition")
    person = (await session.execute(scoping.participants(principal).where(
        P.id == participant_id))).scalar_one_or_none()
    if person is None:
        raise NotFound("No such participant.")
    if person.network != s.network:
        raise RuleViolation("A group never mixes the two networks.", code="network_mismatch")
    if person.facility_id != s.facility_id:
        raise RuleViolation("The person is at another facility.", code="different_facility")
    present = list((await session.execute(select(A.participant_id).where(
        A.session_id == s.id))).scalars())
    if participant_id in present:
        raise Conflict("Already an attendee.", code="already_attending")
    limit = (await settings_of(session, s.facility_id))["group_size_limit"]
    if len(present) >= limit:
        raise Conflict(f"The group is full ({limit}).", code="group_full")
    if present:
        apart = (await session.execute(select(func.count()).select_from(KeepApartOrder.__table__)
                                       .where(K.status == "open", or_(
                                           and_(K.participant_a_id == participant_id,
                                                K.participant_b_id.in_(present)),
                                           and_(K.participant_b_id == participant_id,
                                                K.participant_a_id.in_(present)))))).scalar_one()
        if apart:
            _refuse_apart(principal, "An open keep-apart order stands between this person and "
                                     "someone in the group.")
    session.add(SessionAttendee(session_id=s.id, participant_id=participant_id))
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
    known = set((await session.execute(select(SessionTopic.__table__.c.code).where(
        SessionTopic.__table__.c.code.in_(topics), SessionTopic.__table__.c.active.is_(True))
    )).scalars())
    unknown = [i for i, t in enumerate(topics) if t not in known]
    if unknown:  # named by position: a topic field is free text a peer typed, never echoed
        raise RuleViolation("Unknown topic(s); admins extend the vocabulary.", code="unknown_topic",
                            errors=[{"field": f"topics[{i}]", "message": "not a known topic",
                                     "type": "unknown_topic"} for i in unknown])


async def transition(*, session: AsyncSession, cipher: NoteCipher, principal: Principal,
                     session_id: uuid.UUID, action: str, complete: SessionComplete | None = None,
                     reason: str | None = None, if_match: str | None = None) -> SupportSession:
    s = await get(session=session, principal=principal, session_id=session_id, for_update=True)
    check_version(s.version, if_match)
    target = step(SESSION_FLOW, action, s.status, principal.role)
    now = utcnow()
    w = Writer(session, principal)
    if complete is not None:
        await _topics_known(session, complete.topics)
        # Re-checked at completion: things change between scheduling and meeting.
        if s.pairing_id is not None:
            pairing = await session.get(Pairing, s.pairing_id)
            await _pair_may_meet(session, principal, pairing)  # type: ignore[arg-type]
        elif await _apart_among(session, list((await session.execute(
                select(A.participant_id).where(A.session_id == s.id))).scalars())):
            _refuse_apart(principal, "An open keep-apart order stands between two attendees.")
        attendees = {a.participant_id: a for a in (await session.execute(
            select(SessionAttendee).where(A.session_id == s.id))).scalars()}
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
    _close(s, SessionStatus(target), principal.actor, reason, now)
    w.audit(f"support_session.{action}", "support_session", s.id, s.facility_id)
    _event(w, f"support_session.{target}", s)
    await w.commit()
    return s


async def read_note(*, session: AsyncSession, maker: Any, cipher: NoteCipher,
                    principal: Principal, session_id: uuid.UUID) -> NoteRead:
    """Author, or a clinician through a linked disclosure; anyone else is refused. Both the
    read and the refusal are audited (in a transaction of their own: a GET's session reads)."""
    s = (await session.execute(sessions(principal).where(S.id == session_id))).scalar_one_or_none()
    allowed = False
    if s is not None and s.note_ciphertext is not None:
        if s.note_author == principal.actor:
            allowed = True
        elif principal.is_clinician:
            linked = (await session.execute(select(func.count()).select_from(
                Disclosure.__table__).where(Disclosure.__table__.c.session_id == s.id))).scalar_one()
            allowed = linked > 0
    # Release the request's read (on SQLite it holds the database lock) before the audit row
    # is written in a transaction of its own; the loaded row stays usable.
    await session.close()
    entry = AuditEntry(action="support_session.note_read",
                       outcome="success" if allowed else "denied",
                       entity_type="support_session", entity_id=str(session_id),
                       facility_id=s.facility_id if s is not None else None)
    async with maker() as audit_session:
        await append(audit_session, [entry], actor_type=principal.kind,
                     actor_id=str(principal.id), role=principal.role.value,
                     client_id=principal.name if principal.kind == "client" else None)
        await audit_session.commit()
    if not allowed or s is None:
        refused = NotFound("No note you may read.")
        refused.audited = True
        raise refused
    text = cipher.decrypt(s.note_ciphertext, s.note_wrapped_key,  # type: ignore[arg-type]
                          s.note_key_id, s.id.bytes)  # type: ignore[arg-type]
    return NoteRead(session_id=s.id, text=text, author=s.note_author or "",
                    written_at=s.note_written_at)  # type: ignore[arg-type]


async def record_disclosure(*, session: AsyncSession, principal: Principal,
                            session_id: uuid.UUID, data: DisclosureCreate) -> Disclosure:
    s = await get(session=session, principal=principal, session_id=session_id, for_update=True)
    present = set((await session.execute(select(A.participant_id).where(
        A.session_id == s.id))).scalars())
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
    if data.category.value in _RISK:
        # A risk disclosure opens a crisis escalation in the same transaction.
        category, tier = _RISK[data.category.value]
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


_RISK = {"suicide_risk": ("suicide_risk", "high"), "self_harm": ("self_harm", "high"),
         "harm_to_others": ("violence_threat", "high")}



async def disclosures_of(*, session: AsyncSession, principal: Principal,
                         participant_id: uuid.UUID) -> list[Disclosure]:
    """The ledger of what left confidential sessions about this person: for their
    supporter, their coordinator (network and facility) and clinicians."""
    D = Disclosure.__table__.c
    if principal.is_peer:
        supports = (await session.execute(select(func.count()).select_from(Pairing.__table__)
                                          .where(PR.supporter_id == principal.participant_id,
                                                 PR.recipient_id == participant_id,
                                                 PR.status.in_(("active", "paused"))))
                    ).scalar_one()
        if not supports:
            raise NotFound("No such participant.")
    else:
        found = (await session.execute(scoping.participants(principal, P.id).where(
            P.id == participant_id))).first()
        if found is None:
            raise NotFound("No such participant.")
    rows = await session.execute(select(Disclosure).where(D.participant_id == participant_id)
                                 .order_by(D.passed_at, D.id))
    return list(rows.scalars())


@lru_cache(maxsize=8)
def _summary_statement(wall: frozenset[str]) -> Any:
    """The pairing (within the walls of `scoping.pairing_wall`, values as parameters) and
    its outcomes in one statement: its completed sessions joined with the recipient's
    attendance. No row: no such pairing for this caller."""
    done = and_(S.pairing_id == PR.id, S.status == _St.completed.value)
    recipient = and_(A.session_id == S.id, A.participant_id == PR.recipient_id)
    return (
        select(PR.id, PR.activated_at, PR.proposed_at,
               func.count(S.id).label("held"),  # one row per session: the recipient's
               func.coalesce(func.sum(case((A.status == Attendance.attended.value, 1),
                                           else_=0)), 0).label("attended"),
               func.avg(cast(A.wellbeing_after, Integer) - cast(A.wellbeing_before, Integer))
               .label("change"),
               func.min(S.actual_start).label("first"), func.max(S.actual_start).label("last"))
        .select_from(Pairing.__table__.outerjoin(SupportSession.__table__, done)
                     .outerjoin(SessionAttendee.__table__, recipient))
        .where(PR.id == bindparam("pairing_id"),
               *scoping.Wall("pairing", wall).clauses(bound=False))
        .group_by(PR.id, PR.activated_at, PR.proposed_at))


async def summary(*, session: AsyncSession, principal: Principal,
                  pairing_id: uuid.UUID) -> PairingSummary:
    """Outcomes of a pairing, computed by the database (aggregates, no rows loaded)."""
    wall = scoping.pairing_wall(principal)
    row = None
    if not wall.nothing:
        row = (await session.execute(_summary_statement(wall.shape),
                                     {**wall.params, "pairing_id": pairing_id})).first()
    if row is None:
        raise NotFound("No such pairing.")
    start = row.activated_at or row.proposed_at
    now = utcnow()

    def days(a: datetime | None, b: datetime | None) -> int | None:
        if a is None or b is None:
            return None
        a, b = _aware(a), _aware(b)
        return max(0, (b - a).days)

    return PairingSummary(
        pairing_id=row.id, sessions_held=row.held, sessions_attended=row.attended,
        average_wellbeing_change=round(float(row.change), 2) if row.change is not None else None,
        days_to_first_session=days(start, row.first), days_since_last_session=days(row.last, now))


def _aware(d: datetime) -> datetime:
    from datetime import UTC

    return d if d.tzinfo else d.replace(tzinfo=UTC)


async def list_topics(*, session: AsyncSession) -> list[SessionTopic]:
    return list((await session.execute(select(SessionTopic).order_by(
        SessionTopic.__table__.c.code))).scalars())


async def add_topic(*, session: AsyncSession, principal: Principal,
                    data: TopicCreate) -> SessionTopic:
    topic = SessionTopic(code=data.code, label=data.label)
    session.add(topic)
    await flush_unique(session, "This topic exists.", code="topic_exists")
    w = Writer(session, principal)
    w.audit("session_topic.create", "session_topic", topic.code)
    await w.commit()
    return topic
