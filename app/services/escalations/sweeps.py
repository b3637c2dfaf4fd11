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
from app.services.escalations.triage import ack_deadline
from app.services.escalations.watch import COUNTS_TOWARD_CADENCE
from app.services.escalations.workflow import emit, timeline_entry
from app.services.facilities import settings_from
from app.services.writer import Writer

ESCALATIONS = Escalation.__table__.c
FACILITIES = Facility.__table__.c
OBSERVATIONS = Observation.__table__.c
SYSTEM = "system"  # the actor of what the worker does
BREACHES_PER_ROUND = 200
# The tiers with a required staff observation cadence.
WATCHED_TIERS = tuple(tier for tier, minutes in CADENCE_MINUTES.items() if minutes is not None)


async def breach_sweep(session: AsyncSession, settings: Settings,
                       now: datetime | None = None) -> dict[str, int]:
    """Every escalation whose acknowledgement deadline passed unacknowledged is marked breached,
    moves one step up its facility's chain, gets the next level's deadline, and emits
    `escalation.breached`. Rows are taken FOR UPDATE SKIP LOCKED: workers share, never repeat."""
    now = now or utcnow()
    due = (await session.execute(
        select(Escalation)
        .where(ESCALATIONS.status.in_(WAITING), ESCALATIONS.ack_deadline <= now)
        .order_by(ESCALATIONS.ack_deadline).limit(BREACHES_PER_ROUND)
        .with_for_update(skip_locked=True))).scalars().all()
    if not due:
        return {"breached": 0}
    facility_settings = {facility.id: settings_from(facility.settings) for facility in (
        await session.execute(select(Facility).where(
            FACILITIES.id.in_({esc.facility_id for esc in due})))).scalars()}
    writer = Writer(session, None)
    for esc in due:
        at_facility = facility_settings[esc.facility_id]
        chain = at_facility["escalation_chain"]
        esc.chain_level += 1
        esc.breached = True
        esc.ack_deadline = ack_deadline(at_facility, esc.tier, now)
        esc.version += 1
        esc.updated_at = now
        notify = chain[min(esc.chain_level, len(chain)) - 1]
        timeline_entry(session, esc, "breached", SYSTEM, {"level": esc.chain_level,
                                                          "notify": notify})
        writer.audit("escalation.breach", "escalation", esc.id, esc.facility_id)
        emit(writer, "escalation.breached", esc, level=esc.chain_level, notify=notify)
    await writer.commit()
    return {"breached": len(due)}


async def watch_sweep(session: AsyncSession, settings: Settings,
                      now: datetime | None = None) -> dict[str, int]:
    """Emits `observation.missed` once per lapse: an escalation whose required staff cadence
    has run out since its last staff observation written on time (or since it was raised)."""
    now = now or utcnow()
    last_staff = (select(OBSERVATIONS.escalation_id,
                         func.max(OBSERVATIONS.observed_at).label("last_staff_observation"))
                  .where(*COUNTS_TOWARD_CADENCE)
                  .group_by(OBSERVATIONS.escalation_id).subquery())
    rows = (await session.execute(
        select(Escalation, last_staff.c.last_staff_observation)
        .outerjoin(last_staff, last_staff.c.escalation_id == ESCALATIONS.id)
        .where(ESCALATIONS.status.in_(UNRESOLVED), ESCALATIONS.tier.in_(WATCHED_TIERS))
        .with_for_update(of=Escalation.__table__, skip_locked=True))).all()
    writer = Writer(session, None)
    missed = 0
    for esc, last_observed in rows:
        since = max(d for d in (esc.raised_at, last_observed) if d is not None)
        due = since + timedelta(minutes=CADENCE_MINUTES[esc.tier])  # type: ignore[arg-type]
        if now <= due or (esc.watch_missed_at is not None and esc.watch_missed_at >= due):
            continue
        esc.watch_missed_at = now
        missed += 1
        timeline_entry(session, esc, "observation_missed", SYSTEM, {"since": since.isoformat()})
        emit(writer, "observation.missed", esc)
    await writer.commit()
    return {"missed": missed}
