"""Who is on call at one level at one instant: the pure resolution of a roster (recurring shifts
in the facility's timezone, overrides in UTC). No database, no clock: tested directly.

The rules, in one place:

- A shift recurs on its weekdays: an occurrence starts on a local date `d` (one of the weekdays,
  `valid_from <= d <= valid_until`) at the local wall time `start`.
- **Its length is wall-clock time.** The occurrence ends at the local wall time `start +
  duration` (computed on the local calendar), so a 19:00 night shift of 12 h ends at 07:00 local
  on every night: 13 h of elapsed time on the night the clocks fall back, 11 h on the night they
  spring forward. Hand-overs line up with the next shift's start on those nights as on any
  other; elapsed time would leave an hour with nobody on call every autumn.
- A local wall time is the first instant at which the facility's clock reads that time or
  later: a time that happens twice (fall back: 01:30) is its first occurrence; a time the clocks
  skip (spring forward: 02:30 on a night that goes 02:00 -> 03:00) is the jump itself (03:00).
  Starts and ends use this one rule, so two back-to-back shifts always meet exactly, with no gap
  and no overlap.
- An override (UTC start and end, half-open) **replaces** the level's shift holders for its
  window: while any override of the level is in force, its people (every override in force at
  that level) hold the level and the shifts do not. To add a person to the regular holder,
  override with both.
- Windows are half-open: a holder whose shift ends at 07:00 is not on call at 07:00.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from app.models.roster import Weekday

DAY_OF_WEEKDAY = dict(enumerate(Weekday))  # date.weekday() -> Weekday (Monday is 0)


@dataclass(frozen=True)
class ShiftRule:
    id: uuid.UUID
    level: str
    user_id: uuid.UUID
    weekdays: frozenset[Weekday]
    start: time
    duration_minutes: int
    valid_from: date
    valid_until: date | None = None


@dataclass(frozen=True)
class OverrideRule:
    id: uuid.UUID
    level: str
    user_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime


@dataclass(frozen=True)
class Holder:
    user_id: uuid.UUID
    source: str  # "shift" | "override"
    source_id: uuid.UUID
    since: datetime  # UTC
    until: datetime  # UTC


def _reads(instant: int, tz: ZoneInfo) -> datetime:
    return datetime.fromtimestamp(instant, tz).replace(tzinfo=None)


def local_instant(wall: datetime, tz: ZoneInfo) -> datetime:
    """The first UTC instant at which the clock of `tz` reads the naive local time `wall` or
    later: a repeated time's first occurrence (fold=0), a skipped time's jump."""
    first = wall.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if first.astimezone(tz).replace(tzinfo=None) == wall:
        return first
    # Skipped: fold=0 reads it with the offset before the jump (an instant after it), fold=1
    # with the offset after (an instant before it); the jump lies between, on a whole second.
    before = int(wall.replace(tzinfo=tz, fold=1).astimezone(UTC).timestamp())
    after = int(first.timestamp())
    while after - before > 1:
        mid = (before + after) // 2
        if _reads(mid, tz) >= wall:
            after = mid
        else:
            before = mid
    return datetime.fromtimestamp(after, UTC)


def occurrence(shift: ShiftRule, day: date, tz: ZoneInfo) -> tuple[datetime, datetime] | None:
    """The UTC window of the shift's occurrence starting on local date `day`, if it has one."""
    if DAY_OF_WEEKDAY[day.weekday()] not in shift.weekdays:
        return None
    if day < shift.valid_from or (shift.valid_until is not None and day > shift.valid_until):
        return None
    start_wall = datetime.combine(day, shift.start)
    end_wall = start_wall + timedelta(minutes=shift.duration_minutes)  # wall-clock length
    return local_instant(start_wall, tz), local_instant(end_wall, tz)


def occurrences(shift: ShiftRule, tz: ZoneInfo, at: datetime) -> Iterator[tuple[datetime,
                                                                              datetime]]:
    """Every occurrence that could contain `at`: those starting on the local date of `at` or
    on the days before it that a shift of this length can reach across."""
    today = at.astimezone(tz).date()
    reach = shift.duration_minutes // 1440 + 1
    for back in range(reach, -1, -1):
        window = occurrence(shift, today - timedelta(days=back), tz)
        if window is not None:
            yield window


def holders(shifts: Iterable[ShiftRule], overrides: Iterable[OverrideRule], tz: ZoneInfo,
            level: str, at: datetime) -> list[Holder]:
    """THE resolution: who holds `level` at the instant `at` (aware). Overrides in force
    replace the shifts; one entry per person (the window that lasts longest), ordered by
    since, then user id."""
    found = [Holder(o.user_id, "override", o.id, o.starts_at, o.ends_at)
             for o in overrides if o.level == level and o.starts_at <= at < o.ends_at]
    if not found:
        found = [Holder(s.user_id, "shift", s.id, start, end)
                 for s in shifts if s.level == level
                 for start, end in occurrences(s, tz, at) if start <= at < end]
    best: dict[uuid.UUID, Holder] = {}
    for h in found:
        if h.user_id not in best or h.until > best[h.user_id].until:
            best[h.user_id] = h
    return sorted(best.values(), key=lambda h: (h.since, str(h.user_id)))
