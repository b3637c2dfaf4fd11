"""Who is on call at a facility, for a network: the roster loaded from the database (walled for
the board, whole for the worker's sweeps) and resolved by the pure `resolution.holders`, with
each holder re-checked by `rules.account_refusal` as the account is now."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Select, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.errors import NotFound, RuleViolation
from app.models import Facility, OnCallOverride, OnCallShift, User
from app.models.common import Network
from app.models.roster import (
    MAX_SHIFT_MINUTES,
    OnCallLevel,
    OnCallPerson,
    OnCallRead,
    OverrideStatus,
    Weekday,
)
from app.security.principal import Principal
from app.services import scoping
from app.services.facilities import settings_from
from app.services.rosters.resolution import Holder, OverrideRule, ShiftRule, holders
from app.services.rosters.rules import account_refusal, display_name

SHIFTS = OnCallShift.__table__.c
OVERRIDES = OnCallOverride.__table__.c
USERS = User.__table__.c
# Shifts that could reach `at`: started at most this many days before it (a shift's longest).
_REACH = timedelta(days=MAX_SHIFT_MINUTES // 1440 + 2)


@dataclass
class Roster:
    """One facility and network's roster around an instant, with the accounts it names."""

    facility_id: uuid.UUID
    network: str
    tz: ZoneInfo
    chain: list[str]
    shifts: list[ShiftRule]
    overrides: list[OverrideRule]
    accounts: dict[uuid.UUID, Any] = field(default_factory=dict)

    def on_call(self, level: str, at: datetime) -> list[Holder]:
        """The resolution, less the holders whose account no longer fits the level."""
        return [h for h in holders(self.shifts, self.overrides, self.tz, level, at)
                if account_refusal(self.accounts.get(h.user_id), chain=self.chain, level=level,
                                   facility_id=self.facility_id, network=self.network) is None]


async def load(session: AsyncSession, facility: Facility, network: str, at: datetime, *,
               shifts: Select[Any] | None = None,
               overrides: Select[Any] | None = None) -> Roster:
    """The roster entries that can hold a level at `at` (from `shifts` / `overrides`: walled
    statements for the board; the whole tables for the worker)."""
    tz = ZoneInfo(facility.timezone)
    day = at.astimezone(tz).date()
    shift_stmt: Select[Any] = shifts if shifts is not None else select(OnCallShift)
    override_stmt: Select[Any] = overrides if overrides is not None else select(OnCallOverride)
    shift_rows = (await session.execute(
        shift_stmt.where(
            SHIFTS.facility_id == facility.id, SHIFTS.network == network,
            SHIFTS.valid_from <= day,
            or_(SHIFTS.valid_until.is_(None), SHIFTS.valid_until >= day - _REACH)))).scalars()
    override_rows = (await session.execute(
        override_stmt.where(
            OVERRIDES.facility_id == facility.id, OVERRIDES.network == network,
            OVERRIDES.status == OverrideStatus.active.value,
            OVERRIDES.starts_at <= at, OVERRIDES.ends_at > at))).scalars()
    roster = Roster(
        facility_id=facility.id, network=network, tz=tz,
        chain=list(settings_from(facility.settings)["escalation_chain"]),
        shifts=[ShiftRule(s.id, s.level, s.user_id, frozenset(Weekday(d) for d in s.weekdays),
                          s.start_time, s.duration_minutes, s.valid_from, s.valid_until)
                for s in shift_rows],
        overrides=[OverrideRule(o.id, o.level, o.user_id, o.starts_at, o.ends_at)
                   for o in override_rows])
    ids = {s.user_id for s in roster.shifts} | {o.user_id for o in roster.overrides}
    if ids:
        roster.accounts = {u.id: u for u in (await session.execute(
            select(User).where(USERS.id.in_(ids)))).scalars()}
    return roster


async def board(*, session: AsyncSession, principal: Principal, facility_id: uuid.UUID,
                network: Network | None, at: datetime | None) -> OnCallRead:
    """Who is on call at each level of the facility's chain at `at` (default now), with their
    display names, and the levels with nobody on call (each one an alert)."""
    if at is not None and at.tzinfo is None:
        raise RuleViolation("`at` needs a UTC offset.", code="invalid_time",
                            errors=[{"field": "at", "message": "needs a UTC offset",
                                     "type": "invalid_time"}])
    if network is None:
        if len(principal.networks) != 1:
            raise RuleViolation("Say which network's roster.", code="network_required",
                                errors=[{"field": "network", "message": "required",
                                         "type": "network_required"}])
        network = next(iter(principal.networks))
    wall = scoping.on_call_wall(principal)
    facility = (await session.execute(scoping.facilities(principal).where(
        Facility.id == facility_id))).scalar_one_or_none()
    if facility is None or wall.nothing or (
            "nets" in wall.shape and network.value not in wall.params["nets"]):
        raise NotFound("No such facility.")
    when = at or utcnow()
    roster = await load(session, facility, network.value, when,
                        shifts=scoping.board_shifts(principal),
                        overrides=scoping.board_overrides(principal))
    levels = []
    for number, name in enumerate(roster.chain, start=1):
        people = [OnCallPerson(user_id=h.user_id, display_name=display_name(
                      roster.accounts[h.user_id]), source=h.source, source_id=h.source_id,
                      since=h.since, until=h.until)
                  for h in roster.on_call(name, when)]
        levels.append(OnCallLevel(level=number, name=name, staffed=bool(people), people=people))
    return OnCallRead(facility_id=facility.id, network=network, at=when,
                      timezone=facility.timezone, levels=levels,
                      unstaffed=[lv.name for lv in levels if not lv.staffed])
