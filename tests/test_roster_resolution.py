"""Who is on call: the pure resolution, tested directly (no database), across the nights the
clocks change in America/Chicago and Europe/London. A shift's length is wall-clock time: a
12-hour night shift ends at the same local time on a DST night (13 h or 11 h elapsed), so
back-to-back shifts meet with no gap and no overlap; an override replaces the shift holders."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest

from app.models.roster import Weekday
from app.services.rosters.resolution import OverrideRule, ShiftRule, holders

CHICAGO, LONDON = ZoneInfo("America/Chicago"), ZoneInfo("Europe/London")
EVERY_DAY = frozenset(Weekday)
A, B, C = (uuid.UUID(int=i) for i in (1, 2, 3))
LEVEL = "on_call_clinician"


def shift(user: uuid.UUID, start: str, minutes: int, *, days: frozenset[Weekday] = EVERY_DAY,
          valid_from: date = date(2026, 1, 1), valid_until: date | None = None,
          level: str = LEVEL) -> ShiftRule:
    h, m = (int(x) for x in start.split(":"))
    return ShiftRule(uuid.uuid4(), level, user, days, time(h, m), minutes, valid_from,
                     valid_until)


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)  # type: ignore[misc]


def who(shifts, tz, at, overrides=()) -> list[uuid.UUID]:  # type: ignore[no-untyped-def]
    return [h.user_id for h in holders(shifts, overrides, tz, LEVEL, at)]


# --- the DST nights ------------------------------------------------------------------------
# America/Chicago 2026: spring forward Sun 8 Mar 02:00 CST -> 03:00 CDT (08:00Z);
#                       fall back     Sun 1 Nov 02:00 CDT -> 01:00 CST (07:00Z).
# Europe/London 2026:   spring forward Sun 29 Mar 01:00 GMT -> 02:00 BST (01:00Z);
#                       fall back     Sun 25 Oct 02:00 BST -> 01:00 GMT (01:00Z).
NIGHTS = [  # zone, night shift start (UTC), its end (UTC), elapsed hours
    pytest.param(CHICAGO, utc(2026, 3, 8, 1), utc(2026, 3, 8, 12), 11, id="chicago-spring"),
    pytest.param(CHICAGO, utc(2026, 11, 1, 0), utc(2026, 11, 1, 13), 13, id="chicago-fall"),
    pytest.param(LONDON, utc(2026, 3, 28, 19), utc(2026, 3, 29, 6), 11, id="london-spring"),
    pytest.param(LONDON, utc(2026, 10, 24, 18), utc(2026, 10, 25, 7), 13, id="london-fall"),
]


@pytest.mark.parametrize("tz,start,end,hours", NIGHTS)
def test_a_night_shift_ends_at_its_local_wall_time_on_a_dst_night(tz, start, end, hours):
    night = [shift(A, "19:00", 12 * 60)]
    window = holders(night, (), tz, LEVEL, start)
    assert [(h.since, h.until) for h in window] == [(start, end)]
    assert (end - start) == timedelta(hours=hours)
    assert end.astimezone(tz).time() == time(7, 0)  # 07:00 local, as on any other night
    assert who(night, tz, start - timedelta(seconds=1)) == []
    assert who(night, tz, end - timedelta(seconds=1)) == [A]
    assert who(night, tz, end) == []  # half-open: the hand-over instant is the next shift's


def _sweep(tz: ZoneInfo, around: datetime) -> list[tuple[datetime, list[uuid.UUID]]]:
    """Every 5 minutes over the 36 hours around a clock change."""
    t = around - timedelta(hours=18)
    out = []
    while t < around + timedelta(hours=18):
        out.append(t)
        t += timedelta(minutes=5)
    return out  # type: ignore[return-value]


CHANGES = [pytest.param(CHICAGO, utc(2026, 3, 8, 8), id="chicago-spring"),
           pytest.param(CHICAGO, utc(2026, 11, 1, 7), id="chicago-fall"),
           pytest.param(LONDON, utc(2026, 3, 29, 1), id="london-spring"),
           pytest.param(LONDON, utc(2026, 10, 25, 1), id="london-fall")]


@pytest.mark.parametrize("tz,change", CHANGES)
def test_back_to_back_shifts_cover_every_instant_exactly_once_across_the_change(tz, change):
    """Day and night shifts of 12 h, and three 8-hour shifts whose hand-overs fall inside the
    skipped and the repeated hour (02:30 / 01:30): one holder at every instant, never none,
    never two."""
    two = [shift(A, "07:00", 720), shift(B, "19:00", 720)]
    three = [shift(A, "02:30", 480), shift(B, "10:30", 480), shift(C, "18:30", 480)]
    three_b = [shift(A, "01:30", 480), shift(B, "09:30", 480), shift(C, "17:30", 480)]
    for roster in (two, three, three_b):
        for at in _sweep(tz, change):
            assert len(who(roster, tz, at)) == 1, (at, who(roster, tz, at))


def test_a_start_in_the_skipped_hour_begins_at_the_same_offset_and_in_the_repeated_hour_first():
    starts_in_gap = [shift(A, "02:30", 60, valid_from=date(2026, 3, 8),
                           valid_until=date(2026, 3, 8))]
    # 02:30 does not exist on 8 Mar in Chicago: the clock reads 02:30 or later from the jump
    # (08:00Z, 03:00 CDT); 03:30 CDT is 08:30Z: half an hour, as the wall clock shows it.
    [h] = holders(starts_in_gap, (), CHICAGO, LEVEL, utc(2026, 3, 8, 8, 15))
    assert (h.since, h.until) == (utc(2026, 3, 8, 8), utc(2026, 3, 8, 8, 30))
    assert who(starts_in_gap, CHICAGO, utc(2026, 3, 8, 7, 59, 59)) == []
    # London: 01:30 on 29 Mar is skipped (01:00 GMT -> 02:00 BST at 01:00Z)
    london = [shift(A, "01:30", 60, valid_from=date(2026, 3, 29), valid_until=date(2026, 3, 29))]
    [h] = holders(london, (), LONDON, LEVEL, utc(2026, 3, 29, 1, 10))
    assert (h.since, h.until) == (utc(2026, 3, 29, 1), utc(2026, 3, 29, 1, 30))
    starts_twice = [shift(A, "01:30", 60, valid_from=date(2026, 11, 1),
                          valid_until=date(2026, 11, 1))]
    # 01:30 happens twice on 1 Nov: the first (CDT, -5) is 06:30Z; the wall-clock end 02:30 CST
    # is 08:30Z: two hours of elapsed time for a one-hour shift that night.
    [h] = holders(starts_twice, (), CHICAGO, LEVEL, utc(2026, 11, 1, 7))
    assert (h.since, h.until) == (utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 8, 30))


def test_an_override_replaces_the_shift_holders_for_its_window_only():
    regular = [shift(A, "07:00", 720)]
    # 14:00-16:00Z on 15 Jun is 09:00-11:00 in Chicago (CDT): inside A's day shift.
    cover = OverrideRule(uuid.uuid4(), LEVEL, B, utc(2026, 6, 15, 14), utc(2026, 6, 15, 16))
    assert who(regular, CHICAGO, utc(2026, 6, 15, 13, 59), [cover]) == [A]
    assert who(regular, CHICAGO, utc(2026, 6, 15, 14), [cover]) == [B]
    assert who(regular, CHICAGO, utc(2026, 6, 15, 15, 59), [cover]) == [B]
    assert who(regular, CHICAGO, utc(2026, 6, 15, 16), [cover]) == [A]
    both = OverrideRule(uuid.uuid4(), LEVEL, C, utc(2026, 6, 15, 15), utc(2026, 6, 15, 17))
    assert who(regular, CHICAGO, utc(2026, 6, 15, 15, 30), [cover, both]) == [B, C]
    # an override fills a level no shift covers (night: nobody), and only its own level
    other = OverrideRule(uuid.uuid4(), "duty_supervisor", C, utc(2026, 6, 16, 3),
                         utc(2026, 6, 16, 5))
    assert who(regular, CHICAGO, utc(2026, 6, 16, 4), [other]) == []
    assert [h.user_id for h in holders(regular, [other], CHICAGO, "duty_supervisor",
                                       utc(2026, 6, 16, 4))] == [C]


def test_weekdays_and_validity_are_those_of_the_local_start_date():
    weekend = [shift(A, "17:00", 48 * 60 + 14 * 60, days=frozenset({Weekday.fri}),
                     valid_from=date(2026, 6, 5), valid_until=date(2026, 6, 12))]
    # Fri 5 Jun 17:00 CDT (22:00Z) to Mon 8 Jun 07:00 CDT (12:00Z)
    assert who(weekend, CHICAGO, utc(2026, 6, 5, 21, 59)) == []
    assert who(weekend, CHICAGO, utc(2026, 6, 7, 12)) == [A]  # Sunday: a Friday occurrence
    assert who(weekend, CHICAGO, utc(2026, 6, 8, 11, 59)) == [A]
    assert who(weekend, CHICAGO, utc(2026, 6, 8, 12)) == []
    # the occurrence starting on valid_until (Fri 12 Jun) runs to its end; none after
    assert who(weekend, CHICAGO, utc(2026, 6, 14, 12)) == [A]
    assert who(weekend, CHICAGO, utc(2026, 6, 21, 12)) == []
    # a local date, not a UTC one: Thu 4 Jun 20:00 CDT is already Friday in UTC
    thursday = [shift(B, "20:00", 60, days=frozenset({Weekday.thu}))]
    assert who(thursday, CHICAGO, utc(2026, 6, 5, 1, 30)) == [B]


def test_one_entry_per_person_and_a_stable_order():
    overlapping = [shift(A, "07:00", 720), shift(A, "09:00", 720), shift(B, "09:00", 60)]
    found = holders(overlapping, (), CHICAGO, LEVEL, utc(2026, 6, 15, 14, 30))  # 09:30 CDT
    assert [h.user_id for h in found] == [A, B]
    assert found[0].until == utc(2026, 6, 16, 2)  # A's longer window (09:00 + 12 h CDT)
