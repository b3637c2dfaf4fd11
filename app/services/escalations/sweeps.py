"""The worker's escalation jobs: the acknowledgement clock's breaches up the facility's
escalation chain, and missed staff observations.

The clock lives in the database (`ack_deadline`) and `now` is a parameter (tests drive it).
Rows are taken FOR UPDATE SKIP LOCKED, so several workers never handle one breach twice, and a
worker killed mid-round loses nothing (its transaction rolls back; the rows stay due).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.models import Escalation, Facility, Observation
from app.models.escalation import CADENCE_MINUTES, UNRESOLVED, WAITING
from app.services.escalations.triage import ack_minutes
from app.services.escalations.workflow import emit, timeline_entry
from app.services.facilities import settings_from
from app.services.writer import Writer

E = Escalation.__table__.c


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
        esc.ack_deadline = now + timedelta(minutes=ack_minutes(fac, esc.tier))
        esc.version += 1
        esc.updated_at = now
        notify = chain[min(esc.chain_level, len(chain)) - 1]
        timeline_entry(session, esc, "breached", "system", {"level": esc.chain_level,
                                                            "notify": notify})
        w.audit("escalation.breach", "escalation", esc.id, esc.facility_id)
        emit(w, "escalation.breached", esc, level=esc.chain_level, notify=notify)
    await w.commit()
    return {"breached": len(due)}


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
        timeline_entry(session, esc, "observation_missed", "system", {"since": since.isoformat()})
        emit(w, "observation.missed", esc)
    await w.commit()
    return {"missed": missed}
