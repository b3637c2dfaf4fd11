"""The watch log: observations as they are made (staff or peer), each dated within the
escalation's life and stamped with when and by whom it was written; and the gaps in the
required staff cadence (`gaps`, pure). Only a staff observation written on time counts toward
the cadence (`COUNTS_TOWARD_CADENCE`, also the worker's missed-check clock): a peer's never does,
and a late entry (written more than `observation_late_minutes` after the fact) is shown as late,
inside the gap it would otherwise have filled, so a missed check stays visible."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from enum import StrEnum

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import Conflict, NotFound, RuleViolation
from app.models import Escalation, EscalationEvent, Observation
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
TIMELINE = EscalationEvent.__table__.c


class ObserverKind(StrEnum):
    """Who made an observation (`Observation.observer_kind`): only staff ones count toward the
    required cadence."""

    staff = "staff"
    peer = "peer"


# The observations that satisfy the required staff cadence: staff ones written on time. The gap
# report and the worker's missed-check sweep both take them from here.
COUNTS_TOWARD_CADENCE = (OBSERVATIONS.observer_kind == ObserverKind.staff.value,
                         OBSERVATIONS.late.is_(False))


def counts_toward_cadence(o: Observation) -> bool:
    return o.observer_kind == ObserverKind.staff and not o.late


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


async def _watch_window(session: AsyncSession, esc: Escalation,
                        now: datetime) -> tuple[datetime, datetime]:
    """From the raise to the last resolution (`resolved_at` keeps the first: stamped once; a
    reopened one's later resolutions are in the timeline), or to now while unresolved."""
    if esc.status != EscalationStatus.resolved:
        return esc.raised_at, now
    last = (await session.execute(select(func.max(TIMELINE.at)).where(
        TIMELINE.escalation_id == esc.id, TIMELINE.kind == EscalationStatus.resolved.value))
    ).scalar_one_or_none()
    return esc.raised_at, last or esc.resolved_at or now


def dating_refusal(observed_at: datetime, raised_at: datetime, now: datetime,
                   skew: timedelta) -> RuleViolation | None:
    """Pure: why an observation cannot carry this date, if it cannot."""
    if observed_at < raised_at:
        return RuleViolation("An observation cannot be dated before the escalation was raised.",
                             code="observed_before_raise")
    if observed_at > now + skew:
        return RuleViolation("An observation cannot be dated in the future.",
                             code="observed_in_future")
    return None


async def observe(*, session: AsyncSession, settings: Settings, principal: Principal,
                  escalation_id: uuid.UUID, observed_at: datetime, seen: str) -> Observation:
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    for_update=True)
    if esc.status == EscalationStatus.resolved:
        raise Conflict("The escalation is resolved.", code="invalid_transition")
    now = utcnow()
    refusal = dating_refusal(observed_at, esc.raised_at, now,
                             timedelta(seconds=settings.observation_clock_skew_seconds))
    if refusal is not None:
        raise refusal
    late = now - observed_at > timedelta(minutes=settings.observation_late_minutes)
    kind = ObserverKind.peer if principal.is_peer else ObserverKind.staff
    obs = Observation(escalation_id=esc.id, observed_at=observed_at, recorded_by=principal.actor,
                      observer_kind=kind.value, seen=seen, recorded_at=now, late=late)
    session.add(obs)
    await session.flush()
    writer = Writer(session, principal)
    timeline_entry(session, esc, "observation", principal.actor,
                   {"observer_kind": kind.value, "late": late})
    writer.audit("escalation.observe", "escalation", esc.id, esc.facility_id)
    await writer.commit()
    return obs


async def watch(*, session: AsyncSession, principal: Principal,
                escalation_id: uuid.UUID) -> WatchLog:
    if principal.is_peer:  # a peer adds to the log, never reads it
        raise NotFound("No such escalation.")
    # nor does a blind raiser read theirs (it would tell them who watches, and when)
    esc = await get(session=session, principal=principal, escalation_id=escalation_id,
                    to_work=True)
    observations = list((await session.execute(
        select(Observation).where(OBSERVATIONS.escalation_id == esc.id)
        .order_by(OBSERVATIONS.observed_at, OBSERVATIONS.id))).scalars())
    cadence = CADENCE_MINUTES[esc.tier]
    start, end = await _watch_window(session, esc, utcnow())
    counted = [o.observed_at for o in observations if counts_toward_cadence(o)]
    late_staff = [o for o in observations if o.observer_kind == ObserverKind.staff and o.late]
    return WatchLog(escalation_id=esc.id, cadence_minutes=cadence,
                    observations=[ObservationRead.model_validate(o) for o in observations],
                    gaps=[WatchGap(start=gap_start, end=gap_end,
                                   minutes=int((gap_end - gap_start).total_seconds() // 60),
                                   late_observations=[o.id for o in late_staff
                                                      if gap_start <= o.observed_at <= gap_end])
                          for gap_start, gap_end in gaps(start, end, counted, cadence)])
