"""Certification, derived from training records (never typed in).

A supporter is certified while every active required course of their network is completed,
the code of conduct is signed, and the certificate has not expired. The first period starts
when the last of those was done and lasts the network's validity period; it renews, from the
day they are reached, each time the network's refresher hours are completed within a period
(or after it lapsed, which restores it).
"""

from __future__ import annotations

import calendar
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import CertificationPolicy, Settings
from app.db import utcnow
from app.errors import NotFound
from app.models import ConductSignature, Course, Enrollment
from app.models.training import (
    CertificationMissing,
    CertificationRead,
    EnrollmentStatus,
    ExpiringCertificate,
    MissingCourse,
)
from app.security.principal import Principal
from app.services import scoping


@dataclass(frozen=True)
class Completion:
    course_id: uuid.UUID
    on: date
    hours: float
    refresher: bool


@dataclass
class CertState:
    certified: bool
    since: date | None
    until: date | None
    missing_courses: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    conduct_missing: bool = False
    expired: bool = False
    refresher_hours_needed: float = 0.0


@lru_cache(maxsize=8192)
def add_months(d: date, months: int) -> date:
    y, m = divmod(d.month - 1 + months, 12)
    year, month = d.year + y, m + 1
    return date(year, month, min(d.day, calendar.monthrange(year, month)[1]))


def derive(*, required: list[tuple[uuid.UUID, str]], completions: list[Completion],
           signed_on: date | None, policy: CertificationPolicy, today: date) -> CertState:
    """Pure: the certification state from training records (see the module's docstring)."""
    first_done: dict[uuid.UUID, date] = {}
    for c in sorted(completions, key=lambda c: c.on):
        first_done.setdefault(c.course_id, c.on)
    missing = [(cid, title) for cid, title in required if cid not in first_done]
    if missing or signed_on is None:
        return CertState(certified=False, since=None, until=None, missing_courses=missing,
                         conduct_missing=signed_on is None)
    last_first = max((first_done[cid] for cid, _ in required), default=None)
    refreshers = [(c.on, c.hours) for c in completions if c.refresher]
    return period(last_first, signed_on, refreshers, policy, today)


def period(last_required: date | None, signed_on: date, refreshers: list[tuple[date, float]],
           policy: CertificationPolicy, today: date) -> CertState:
    """Pure: the validity period once every requirement is met: it starts when the last one
    was, and renews from the day the refresher hours completed within a period add up.
    Cheap without refresher records (the common case, called 2,000 times by candidates)."""
    start = signed_on if last_required is None or signed_on > last_required else last_required
    until = add_months(start, policy.validity_months)
    hours = 0.0
    if refreshers:
        for on, h in sorted(refreshers):
            if on <= start:
                continue
            hours += h
            if hours >= policy.refresher_hours > 0:
                start, until, hours = on, add_months(on, policy.validity_months), 0.0
    return CertState(certified=today <= until, since=start, until=until, expired=today > until,
                     refresher_hours_needed=max(0.0, policy.refresher_hours - hours))


async def certified_among(session: AsyncSession, settings: Settings, among: Any,
                          network: str) -> dict[uuid.UUID, CertState]:
    """Certification of every participant selected by the `among` id subquery (one network),
    aggregated by the database: a row per person, not per training record. For lists of many
    supporters (candidates, the expiring list, the sweep); `state_of` gives the full detail."""
    required = [cid for cid, _ in await _required(session, network)]
    e, c, s = Enrollment.__table__.c, Course.__table__.c, ConductSignature.__table__.c
    done = e.status == EnrollmentStatus.completed.value
    firsts = (select(e.participant_id.label("pid"), e.course_id,
                     func.min(e.completed_at).label("first"))
              .where(done, e.participant_id.in_(among), e.course_id.in_(required))
              .group_by(e.participant_id, e.course_id).subquery()) if required else None
    signed: dict[uuid.UUID, date] = dict((await session.execute(
        select(s.participant_id, func.min(s.signed_on)).where(s.participant_id.in_(among))
        .group_by(s.participant_id))).all())
    progress: dict[uuid.UUID, tuple[int, Any]] = {}
    if firsts is not None:
        rows = await session.execute(select(firsts.c.pid, func.count(), func.max(firsts.c.first))
                                     .group_by(firsts.c.pid))
        progress = {r[0]: (r[1], r[2]) for r in rows}
    refreshers: dict[uuid.UUID, list[tuple[date, float]]] = defaultdict(list)
    for r in await session.execute(
            select(e.participant_id, e.completed_at, c.hours).join(Course.__table__,
                                                                   c.id == e.course_id)
            .where(done, c.refresher.is_(True), e.participant_id.in_(among))):
        refreshers[r[0]].append((r[1].date(), r[2]))
    policy, today = _policy(settings, network), utcnow().date()
    out: dict[uuid.UUID, CertState] = {}
    for pid, signed_on in signed.items():
        n_done, last = progress.get(pid, (0, None))
        if n_done < len(required):
            continue
        out[pid] = period(last.date() if last else None, signed_on, refreshers.get(pid, []),
                          policy, today)
    return out


def _policy(settings: Settings, network: str) -> CertificationPolicy:
    return settings.certification.get(network) or CertificationPolicy()


async def _required(session: AsyncSession, network: str) -> list[tuple[uuid.UUID, str]]:
    c = Course.__table__.c
    rows = await session.execute(select(c.id, c.title).where(
        c.required_for_certification.is_(True), c.active.is_(True),
        (c.network.is_(None)) | (c.network == network)).order_by(c.title))
    return [(r.id, r.title) for r in rows]


async def states(session: AsyncSession, settings: Settings,
                 people: list[tuple[uuid.UUID, str]]) -> dict[uuid.UUID, CertState]:
    """Certification of many participants in four queries, whatever their number."""
    if not people:
        return {}
    ids = [pid for pid, _ in people]
    required = {n: await _required(session, n) for n in {net for _, net in people}}
    e, c = Enrollment.__table__.c, Course.__table__.c
    done: dict[uuid.UUID, list[Completion]] = defaultdict(list)
    rows = await session.execute(
        select(e.participant_id, e.course_id, e.completed_at, c.hours, c.refresher)
        .join(Course.__table__, c.id == e.course_id)
        .where(e.participant_id.in_(ids), e.status == EnrollmentStatus.completed.value))
    for r in rows:
        done[r.participant_id].append(Completion(r.course_id, r.completed_at.date(), r.hours,
                                                 r.refresher))
    s = ConductSignature.__table__.c
    signed: dict[uuid.UUID, date] = dict((await session.execute(
        select(s.participant_id, func.min(s.signed_on)).where(s.participant_id.in_(ids))
        .group_by(s.participant_id))).all())
    today = utcnow().date()
    return {pid: derive(required=required[net], completions=done[pid], signed_on=signed.get(pid),
                        policy=_policy(settings, net), today=today)
            for pid, net in people}


async def state_of(session: AsyncSession, settings: Settings, participant: Any) -> CertState:
    return (await states(session, settings, [(participant.id, participant.network)]))[participant.id]


def to_read(participant_id: uuid.UUID, st: CertState) -> CertificationRead:
    return CertificationRead(
        participant_id=participant_id, certified=st.certified, since=st.since, until=st.until,
        missing=CertificationMissing(
            courses=[MissingCourse(id=i, title=t) for i, t in st.missing_courses],
            code_of_conduct=st.conduct_missing, expired=st.expired,
            refresher_hours=st.refresher_hours_needed))


async def get(*, session: AsyncSession, settings: Settings, principal: Principal,
              participant_id: uuid.UUID) -> CertificationRead:
    # Only who they are and their network, through the participants' wall (scoping), so this
    # module never reaches the participants service (which reaches pairings, which reach here).
    P = scoping.P
    person = (await session.execute(scoping.participants(principal, P.id, P.network)
                                    .where(P.id == participant_id))).first()
    if person is None:
        raise NotFound("No such participant.")
    return to_read(person.id, await state_of(session, settings, person))


async def expiring(*, session: AsyncSession, settings: Settings, principal: Principal,
                   within_days: int, facility_id: uuid.UUID | None) -> list[ExpiringCertificate]:
    """Supporters in scope, certified today, whose certificate ends within `within_days`."""
    P = scoping.P
    horizon = utcnow().date() + timedelta(days=within_days)
    out: list[ExpiringCertificate] = []
    for network in sorted(n.value for n in principal.networks):
        clauses = [P.is_supporter.is_(True), P.archived_at.is_(None), P.network == network]
        if facility_id:
            clauses.append(P.facility_id == facility_id)
        among = scoping.participants(principal, P.id).where(*clauses)
        found = await certified_among(session, settings, among, network)
        soon = {pid for pid, st in found.items()
                if st.certified and st.until is not None and st.until <= horizon}
        if not soon:
            continue
        rows = await session.execute(select(P.id, P.facility_id).where(P.id.in_(soon)))
        where: dict[uuid.UUID, uuid.UUID] = dict(rows.all())
        out += [ExpiringCertificate(participant_id=pid, facility_id=where[pid],
                                    until=found[pid].until)  # type: ignore[arg-type]
                for pid in soon]
    return sorted(out, key=lambda x: (x.until, str(x.participant_id)))


__all__ = ["add_months", "certified_among", "derive", "expiring", "get", "period", "state_of",
           "states"]
