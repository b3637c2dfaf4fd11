"""Crisis escalations: raising (idempotent), triage from the C-SSRS screener, the workflow,
tier changes, the acknowledgement clock and its breaches up the facility's escalation chain.

The clock lives in the database (`ack_deadline`): `breach_sweep` is run by the worker and
takes due rows with FOR UPDATE SKIP LOCKED, so several workers never handle one breach twice,
and a worker killed mid-round loses nothing (its transaction rolls back; the rows stay due).
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any

from sqlalchemy import Integer, bindparam, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, Forbidden, NotFound, RuleViolation
from app.models import (
    Escalation,
    EscalationEvent,
    Facility,
    HousingUnit,
    Observation,
    Pairing,
    Participant,
    User,
)
from app.models.common import Role
from app.models.escalation import (
    CADENCE_MINUTES,
    TIER_ORDER,
    UNRESOLVED,
    WAITING,
    EscalationCreate,
    EscalationStatus,
    ObservationRead,
    Screener,
    Tier,
    WatchGap,
    WatchLog,
)
from app.models.facility import DEFAULT_ACK_MINUTES
from app.security.principal import Principal
from app.security.scopes import ESCALATION_WORKERS
from app.services import scoping
from app.services.common import check_version
from app.services.facilities import settings_from, settings_of
from app.services.pagination import decode_uuid_cursor, encode_cursor
from app.services.workflow import Transition, step, table
from app.services.writer import Writer

E = Escalation.__table__.c
P = scoping.P
PR = Pairing.__table__.c
_ACTORS = ESCALATION_WORKERS
_St = EscalationStatus
ESCALATION_FLOW = table(
    Transition("acknowledge", frozenset({_St.open.value, _St.reopened.value}),
               _St.acknowledged.value, _ACTORS),
    Transition("resolve", frozenset({_St.acknowledged.value}), _St.resolved.value, _ACTORS),
    Transition("reopen", frozenset({_St.resolved.value}), _St.reopened.value, _ACTORS),
)


def triage(s: Screener) -> tuple[Tier, str]:
    """The published C-SSRS screener triage: yes to Q4 (intent) or Q5 (plan), or suicidal
    behaviour in the past three months, is high risk; yes to Q3 (method) or behaviour longer
    ago is moderate; yes to Q1 or Q2 alone is low; all no is low."""
    if s.intent:
        return Tier.high, "Q4 (intent) yes"
    if s.plan:
        return Tier.high, "Q5 (plan) yes"
    if s.behavior and s.behavior_within_3_months:
        return Tier.high, "Q6 (behaviour) yes, within 3 months"
    if s.thoughts_with_method:
        return Tier.moderate, "Q3 (method) yes"
    if s.behavior:
        return Tier.moderate, "Q6 (behaviour) yes, over 3 months ago"
    if s.wish_to_be_dead or s.suicidal_thoughts:
        return Tier.low, "Q1 or Q2 yes only"
    return Tier.low, "all answers no"


def _minutes(settings_json: dict[str, Any], tier: str) -> int:
    return int({**DEFAULT_ACK_MINUTES, **(settings_json.get("ack_minutes") or {})}[tier])


def escalations(principal: Principal) -> Any:
    """The scoped base query (the walls: `scoping.escalation_wall`)."""
    return scoping.escalations(principal)


async def get(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
              for_update: bool = False) -> Escalation:
    stmt = escalations(principal).where(E.id == escalation_id)
    if for_update:
        stmt = stmt.with_for_update()
    found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("No such escalation.")
    return found


# What a list reads: every column a role-shaped view may show (app/routers/escalations.view).
_VIEW_COLUMNS = [E.id, E.participant_id, E.facility_id, E.network, E.category, E.description,
                 E.location_unit_id, E.location_text, E.tier, E.screener, E.status,
                 E.ack_deadline, E.breached, E.chain_level, E.assigned_to, E.raised_by,
                 E.raised_at, E.acknowledged_at, E.acknowledged_by, E.resolved_at, E.resolved_by,
                 E.outcome, E.follow_up_plan, E.review_date, E.version]
VIEW_FIELDS = tuple(c.name for c in _VIEW_COLUMNS)


@lru_cache(maxsize=64)
def _list_statement(wall: frozenset[str], status: bool, by_deadline: bool, after: bool) -> Any:
    """One prebuilt statement per shape: the walls of `scoping.escalation_wall` with
    placeholders, plain rows (the dashboard is refreshed every few seconds)."""
    stmt = select(*_VIEW_COLUMNS).where(
        *scoping.Wall("escalation", wall).clauses(bound=False))
    if status:
        stmt = stmt.where(E.status == bindparam("status"))
    if by_deadline:  # the dashboard: most urgent first, one screenful
        return stmt.order_by(E.ack_deadline, E.id).limit(bindparam("lim", type_=Integer))
    if after:
        stmt = stmt.where(E.id > bindparam("after"))
    return stmt.order_by(E.id).limit(bindparam("lim", type_=Integer))


async def list_(*, session: AsyncSession, principal: Principal, status: EscalationStatus | None,
                by_deadline: bool, limit: int, cursor: str | None,
                ) -> tuple[list[dict[str, Any]], str | None]:
    """Plain dicts of VIEW_FIELDS (no ORM objects) for the role-shaped views; by deadline: one
    page, no cursor."""
    after = None if by_deadline else decode_uuid_cursor(cursor, "escalation")
    wall = scoping.escalation_wall(principal)
    if wall.nothing:
        return [], None
    params: dict[str, Any] = {**wall.params, "lim": limit if by_deadline else limit + 1}
    if status:
        params["status"] = status.value
    if after is not None:
        params["after"] = after
    stmt = _list_statement(wall.shape, status is not None, by_deadline, after is not None)
    rows = [dict(zip(VIEW_FIELDS, row, strict=True))
            for row in await session.execute(stmt, params)]
    if by_deadline:
        return rows, None
    nxt = encode_cursor("escalation", rows[limit - 1]["id"]) if len(rows) > limit else None
    return rows[:limit], nxt


async def _subject(session: AsyncSession, principal: Principal,
                   participant_id: uuid.UUID) -> Participant:
    """Anyone may raise about a person they can see; a peer supporter also about the people
    they support."""
    person = (await session.execute(scoping.participants(principal).where(
        P.id == participant_id))).scalar_one_or_none()
    if person is None and principal.is_peer and principal.participant_id:
        supports = select(PR.recipient_id).where(PR.supporter_id == principal.participant_id,
                                                 PR.status.in_(("active", "paused")))
        person = (await session.execute(select(Participant).where(
            P.id == participant_id, P.id.in_(supports)))).scalar_one_or_none()
    if person is None:
        raise NotFound("No such participant.")
    return person


async def raise_(*, session: AsyncSession, principal: Principal, data: EscalationCreate,
                 w: Writer | None = None, commit: bool = True) -> Escalation:
    """Opens an escalation (a retried POST is made safe by its Idempotency-Key, handled for
    every POST by app.idempotency)."""
    person = await _subject(session, principal, data.participant_id)
    screener = None
    if data.screener is not None:
        tier, rule = triage(data.screener)
        screener = {"answers": data.screener.model_dump(), "derived_tier": tier.value,
                    "rule": rule}
    else:
        tier = data.tier  # type: ignore[assignment]
    if data.location_unit_id:
        unit = await session.get(HousingUnit, data.location_unit_id)
        if unit is None or unit.facility_id != person.facility_id:
            raise RuleViolation("The location is not a unit of the person's facility.",
                                code="unknown_housing_unit")
    fac = await settings_of(session, person.facility_id)
    now = utcnow()
    esc = Escalation(
        participant_id=person.id, facility_id=person.facility_id, network=person.network,
        category=data.category.value, description=data.description,
        location_unit_id=data.location_unit_id or person.housing_unit_id,
        location_text=data.location_text, tier=tier.value, screener=screener,
        ack_deadline=now + timedelta(minutes=_minutes(fac, tier.value)), raised_by=principal.actor,
        raised_at=now)
    session.add(esc)
    await session.flush()
    w = w or Writer(session, principal)
    _timeline(session, esc, "created", principal.actor, {"tier": tier.value})
    w.audit("escalation.create", "escalation", esc.id, esc.facility_id)
    _emit(w, "escalation.created", esc)
    if commit:
        await w.commit()
    return esc


def _timeline(session: AsyncSession, esc: Escalation, kind: str, by: str,
              detail: dict[str, Any] | None = None) -> None:
    session.add(EscalationEvent(escalation_id=esc.id, kind=kind, at=utcnow(), by=by,
                                detail=detail or {}))


def _emit(w: Writer, type_: str, esc: Escalation, **data: Any) -> None:
    w.emit(type_, "escalation", esc.id, facility_id=esc.facility_id, network=esc.network,
           data=data)


async def transition(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                     action: str, body: Any = None, if_match: str | None = None) -> Escalation:
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True)
    check_version(esc.version, if_match)
    target = step(ESCALATION_FLOW, action, esc.status, principal.role)
    now = utcnow()
    if action == "acknowledge" and esc.acknowledged_at is None:
        esc.acknowledged_at, esc.acknowledged_by = now, principal.actor
    if action == "resolve":
        if esc.tier in (Tier.high.value, Tier.imminent.value):
            if not principal.is_clinician:
                raise Forbidden("Resolving a high or imminent escalation needs a clinician.",
                                code="clinician_required")
            if not body.follow_up_plan or not body.review_date:
                raise RuleViolation("A follow-up plan and a review date are required.",
                                    code="follow_up_required")
        esc.resolved_at, esc.resolved_by = now, principal.actor
        esc.outcome, esc.follow_up_plan, esc.review_date = (body.outcome, body.follow_up_plan,
                                                            body.review_date)
    if action == "reopen":
        fac = await settings_of(session, esc.facility_id)
        esc.ack_deadline = now + timedelta(minutes=_minutes(fac, esc.tier))
        esc.breached, esc.chain_level = False, 0
    esc.status = target
    esc.version += 1
    esc.updated_at = now
    w = Writer(session, principal)
    _timeline(session, esc, {"acknowledge": "acknowledged", "resolve": "resolved",
                             "reopen": "reopened"}[action], principal.actor)
    w.audit(f"escalation.{action}", "escalation", esc.id, esc.facility_id)
    _emit(w, f"escalation.{target}", esc)
    await w.commit()
    return esc


async def assign(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                 user_id: uuid.UUID, if_match: str | None) -> Escalation:
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True)
    check_version(esc.version, if_match)
    if esc.status == _St.resolved.value:
        raise Conflict("A resolved escalation is not assigned; reopen it first.",
                       code="invalid_transition")
    user = await session.get(User, user_id)
    covers = user is not None and user.active and (
        user.all_facilities or str(esc.facility_id) in (user.facility_ids or []))
    if not covers or Role(user.role) not in _ACTORS:  # type: ignore[union-attr]
        raise RuleViolation("The assignee must be an active clinician or coordinator of the "
                            "facility.", code="assignee_not_eligible")
    esc.assigned_to = user_id
    esc.version += 1
    esc.updated_at = utcnow()
    w = Writer(session, principal)
    _timeline(session, esc, "assigned", principal.actor, {"user_id": str(user_id)})
    w.audit("escalation.assign", "escalation", esc.id, esc.facility_id)
    _emit(w, "escalation.assigned", esc)
    await w.commit()
    return esc


async def change_tier(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                      tier: Tier, reason: str, if_match: str | None) -> Escalation:
    """Raised by anyone who may act on it, at any time; lowered only by a clinician."""
    if principal.role not in _ACTORS:
        raise Forbidden("Your role may not change the tier.", code="transition_not_allowed")
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True)
    check_version(esc.version, if_match)
    old = Tier(esc.tier)
    if tier == old:
        return esc
    if TIER_ORDER[tier] < TIER_ORDER[old] and not principal.is_clinician:
        raise Forbidden("Only a clinician may lower the tier.", code="clinician_required")
    if esc.status == _St.resolved.value:
        raise Conflict("A resolved escalation's tier is final; reopen it first.",
                       code="invalid_transition")
    now = utcnow()
    if esc.status in WAITING and TIER_ORDER[tier] > TIER_ORDER[old]:
        fac = await settings_of(session, esc.facility_id)
        # A higher tier can only bring the deadline closer.
        esc.ack_deadline = min(esc.ack_deadline, now + timedelta(minutes=_minutes(fac, tier.value)))
    esc.tier = tier.value
    esc.version += 1
    esc.updated_at = now
    w = Writer(session, principal)
    _timeline(session, esc, "tier_changed", principal.actor, {"from": old.value, "to": tier.value})
    w.audit("escalation.tier_change", "escalation", esc.id, esc.facility_id)
    _emit(w, "escalation.tier_changed", esc)  # thin: the tier is read with the reader's own rights
    await w.commit()
    return esc


async def timeline(*, session: AsyncSession, principal: Principal,
                   escalation_id: uuid.UUID) -> list[EscalationEvent]:
    await get(session=session, principal=principal, escalation_id=escalation_id)
    X = EscalationEvent.__table__.c
    rows = await session.execute(select(EscalationEvent).where(X.escalation_id == escalation_id)
                                 .order_by(X.at, X.id))
    return list(rows.scalars())


async def breach_sweep(session: AsyncSession, settings: Settings,
                       now: datetime | None = None) -> dict[str, int]:
    """Every escalation whose acknowledgement deadline passed unacknowledged is marked breached,
    moves one step up its facility's chain, gets the next level's deadline, and emits
    `escalation.breached`. Rows are taken FOR UPDATE SKIP LOCKED: workers share, never repeat."""
    now = now or utcnow()
    due = (await session.execute(
        select(Escalation).where(E.status.in_(WAITING), E.ack_deadline <= now)
        .order_by(E.ack_deadline).limit(200).with_for_update(skip_locked=True))).scalars().all()
    if not due:
        return {"breached": 0}
    facilities = {f.id: settings_from(f.settings) for f in (await session.execute(select(Facility).where(
        Facility.__table__.c.id.in_({e.facility_id for e in due})))).scalars()}
    w = Writer(session, None)
    for esc in due:
        fac = facilities[esc.facility_id]
        chain = fac["escalation_chain"]
        esc.chain_level += 1
        esc.breached = True
        esc.ack_deadline = now + timedelta(minutes=_minutes(fac, esc.tier))
        esc.version += 1
        esc.updated_at = now
        notify = chain[min(esc.chain_level, len(chain)) - 1]
        _timeline(session, esc, "breached", "system", {"level": esc.chain_level,
                                                       "notify": notify})
        w.audit("escalation.breach", "escalation", esc.id, esc.facility_id)
        _emit(w, "escalation.breached", esc, level=esc.chain_level, notify=notify)
    await w.commit()
    return {"breached": len(due)}



def gaps(start: datetime, end: datetime, staff_times: list[datetime],
         cadence_minutes: int | None) -> list[tuple[datetime, datetime]]:
    """Pure: intervals from `start` to `end` longer than the cadence with no staff
    observation inside (peer observations are not passed in: they never count)."""
    if cadence_minutes is None:
        return []
    limit = timedelta(minutes=cadence_minutes)
    out: list[tuple[datetime, datetime]] = []
    last = start
    for t in sorted(x for x in staff_times if start <= x <= end):
        if t - last > limit:
            out.append((last, t))
        last = t
    if end - last > limit:
        out.append((last, end))
    return out


def _watch_window(esc: Escalation, now: datetime) -> tuple[datetime, datetime]:
    end = esc.resolved_at if esc.status == "resolved" and esc.resolved_at else now
    return esc.raised_at, end


async def observe(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                  observed_at: datetime, seen: str) -> Observation:
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True)
    if esc.status == "resolved":
        raise Conflict("The escalation is resolved.", code="invalid_transition")
    if observed_at > utcnow() + timedelta(minutes=1):
        raise RuleViolation("An observation cannot be in the future.", code="observed_in_future")
    kind = "peer" if principal.is_peer else "staff"
    obs = Observation(escalation_id=esc.id, observed_at=observed_at, recorded_by=principal.actor,
                      observer_kind=kind, seen=seen)
    session.add(obs)
    await session.flush()
    w = Writer(session, principal)
    _timeline(session, esc, "observation", principal.actor, {"observer_kind": kind})
    w.audit("escalation.observe", "escalation", esc.id, esc.facility_id)
    await w.commit()
    return obs


async def watch(*, session: AsyncSession, principal: Principal,
                escalation_id: uuid.UUID) -> WatchLog:
    if principal.is_peer:  # a peer adds to the log, never reads it
        raise NotFound("No such escalation.")
    esc = await get(session=session, principal=principal, escalation_id=escalation_id)
    Ob = Observation.__table__.c
    rows = list((await session.execute(select(Observation).where(Ob.escalation_id == esc.id)
                                       .order_by(Ob.observed_at, Ob.id))).scalars())
    cadence = CADENCE_MINUTES[esc.tier]
    start, end = _watch_window(esc, utcnow())
    found = gaps(start, end, [o.observed_at for o in rows if o.observer_kind == "staff"], cadence)
    return WatchLog(escalation_id=esc.id, cadence_minutes=cadence,
                    observations=[ObservationRead.model_validate(o) for o in rows],
                    gaps=[WatchGap(start=a, end=b, minutes=int((b - a).total_seconds() // 60))
                          for a, b in found])


async def watch_sweep(session: AsyncSession, settings: Settings,
                      now: datetime | None = None) -> dict[str, int]:
    """Emits `observation.missed` once per lapse: an escalation whose required staff cadence
    has run out since its last staff observation (or since it was raised)."""
    now = now or utcnow()
    Ob = Observation.__table__.c
    last_staff = (select(Ob.escalation_id, func.max(Ob.observed_at).label("last"))
                  .where(Ob.observer_kind == "staff").group_by(Ob.escalation_id).subquery())
    rows = (await session.execute(
        select(Escalation, last_staff.c.last).outerjoin(last_staff,
                                                        last_staff.c.escalation_id == E.id)
        .where(E.status.in_(UNRESOLVED), E.tier.in_(("imminent", "high", "moderate")))
        .with_for_update(of=Escalation.__table__, skip_locked=True))).all()
    w = Writer(session, None)
    missed = 0
    for esc, last in rows:
        since = max(d for d in (esc.raised_at, last) if d is not None)
        due = since + timedelta(minutes=CADENCE_MINUTES[esc.tier])  # type: ignore[arg-type]
        if now <= due or (esc.watch_missed_at is not None and esc.watch_missed_at >= due):
            continue
        esc.watch_missed_at = now
        missed += 1
        _timeline(session, esc, "observation_missed", "system", {"since": since.isoformat()})
        _emit(w, "observation.missed", esc)
    await w.commit()
    return {"missed": missed}
