"""The watch log: observations as they are made (staff or peer), and the gaps in the required
staff cadence (`gaps`, pure: peer observations never close one)."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import Escalation, Observation
from app.models.escalation import (
    CADENCE_MINUTES,
    EscalationStatus,
    ObservationRead,
    WatchGap,
    WatchLog,
)
from app.security.principal import Principal
from app.services.escalations.views import get
from app.services.escalations.workflow import timeline_entry
from app.services.writer import Writer

OBSERVATIONS = Observation.__table__.c


class ObserverKind(StrEnum):
    """Who made an observation (`Observation.observer_kind`): only staff ones count toward the
    required cadence."""

    staff = "staff"
    peer = "peer"


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
    """From the raise to the resolution, or to now while unresolved."""
    if esc.status == EscalationStatus.resolved and esc.resolved_at:
        return esc.raised_at, esc.resolved_at
    return esc.raised_at, now


async def observe(*, session: AsyncSession, principal: Principal, escalation_id: uuid.UUID,
                  observed_at: datetime, seen: str) -> Observation:
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True)
    if esc.status == EscalationStatus.resolved:
        raise Conflict("The escalation is resolved.", code="invalid_transition")
    if observed_at > utcnow() + timedelta(minutes=1):
        raise RuleViolation("An observation cannot be in the future.", code="observed_in_future")
    kind = ObserverKind.peer if principal.is_peer else ObserverKind.staff
    obs = Observation(escalation_id=esc.id, observed_at=observed_at, recorded_by=principal.actor,
                      observer_kind=kind.value, seen=seen)
    session.add(obs)
    await session.flush()
    writer = Writer(session, principal)
    timeline_entry(session, esc, "observation", principal.actor, {"observer_kind": kind.value})
    writer.audit("escalation.observe", "escalation", esc.id, esc.facility_id)
    await writer.commit()
    return obs


async def watch(*, session: AsyncSession, principal: Principal,
                escalation_id: uuid.UUID) -> WatchLog:
    if principal.is_peer:  # a peer adds to the log, never reads it
        raise NotFound("No such escalation.")
    esc = await get(session=session, principal=principal, escalation_id=escalation_id)
    observations = list((await session.execute(
        select(Observation).where(OBSERVATIONS.escalation_id == esc.id)
        .order_by(OBSERVATIONS.observed_at, OBSERVATIONS.id))).scalars())
    cadence = CADENCE_MINUTES[esc.tier]
    start, end = _watch_window(esc, utcnow())
    staff_times = [o.observed_at for o in observations if o.observer_kind == ObserverKind.staff]
    return WatchLog(escalation_id=esc.id, cadence_minutes=cadence,
                    observations=[ObservationRead.model_validate(o) for o in observations],
                    gaps=[WatchGap(start=gap_start, end=gap_end,
                                   minutes=int((gap_end - gap_start).total_seconds() // 60))
                          for gap_start, gap_end in gaps(start, end, staff_times, cadence)])
