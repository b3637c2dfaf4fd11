"""Every figure of the program report, exactly, from known data (before suppression: the
figures the database aggregates; tests/test_reports.py proves what readers see of them)."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import make_async_engine, make_sessionmaker
from app.models import (
    Enrollment,
    Escalation,
    Observation,
    Pairing,
    Referral,
    SessionAttendee,
    SupportSession,
)
from app.reports.figures import A, Figures, Month, S, Scope, months_between
from app.reports.suppression import Cell
from tests.factories import Factory

MARCH = datetime(2026, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 4, 15, tzinfo=UTC)


def at(day: int, hour: int = 10, minute: int = 0, month: int = 3) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


class Program:
    """One facility (UTC) with units A and B: 2 supporters and 10 recipients in A/B/none."""

    def __init__(self, factory: Factory) -> None:
        f = self.f = factory
        self.facility = f.facility(timezone="UTC")
        self.a, self.b = f.unit(self.facility, "A"), f.unit(self.facility, "B")
        self.s1 = f.certified_supporter(self.facility, housing_unit_id=self.a.id)
        self.s2 = f.certified_supporter(self.facility, housing_unit_id=self.a.id)
        units = [self.a] * 4 + [self.b] * 2 + [self.a, self.b, None, self.b]
        self.r = [f.recipient(self.facility, housing_unit_id=u.id if u else None) for u in units]
        # Population now: A 2 + 5 = 7, B 4, none 1 -> 12.

    def save(self, *rows: Any) -> None:
        with Session(self.f.engine, expire_on_commit=False) as s:
            s.add_all(rows)
            s.commit()

    def pairing(self, recipient: Any, activated: datetime, ended: datetime | None = None,
                reason: str | None = None) -> Pairing:
        p = Pairing(supporter_id=self.s1.id, recipient_id=recipient.id,
                    facility_id=self.facility.id, network="incarcerated",
                    status="ended" if ended else "active", proposed_by="t",
                    proposed_at=activated, activated_at=activated, ended_at=ended,
                    end_reason=reason)
        self.save(p)
        return p

    def session(self, when: datetime, *, pairing: Pairing | None = None, status: str = "completed",
                minutes: int = 60, topics: list[str] | None = None,
                attendees: list[tuple[Any, str, int | None, int | None]] = ()) -> SupportSession:
        s = SupportSession(kind="one_to_one" if pairing else "group",
                           pairing_id=pairing.id if pairing else None,
                           facilitator_id=self.s1.id if pairing else self.s2.id,
                           facility_id=self.facility.id, network="incarcerated", status=status,
                           scheduled_at=when, scheduled_by="t", actual_start=when,
                           duration_minutes=minutes, topics=topics or [])
        self.save(s)
        rows = [SessionAttendee.of(s, s.facilitator_id, status="attended")]  # type: ignore[arg-type]
        rows += [SessionAttendee.of(s, p.id, status=st, wellbeing_before=b, wellbeing_after=a)
                 for p, st, b, a in attendees]
        self.save(*rows)
        return s

    def escalation(self, person: Any, tier: str, raised: datetime, acked: datetime | None = None,
                   *, breached: bool = False, unit: Any = None,
                   resolved: datetime | None = None) -> Escalation:
        e = Escalation(participant_id=person.id if person else None, facility_id=self.facility.id,
                       network="incarcerated", category="self_harm", description="seen",
                       tier=tier, status="resolved" if resolved else
                       "acknowledged" if acked else "open",
                       ack_deadline=raised + timedelta(minutes=15), breached=breached,
                       raised_by="t", raised_at=raised, acknowledged_at=acked,
                       acknowledged_by="t" if acked else None, resolved_at=resolved,
                       location_unit_id=unit.id if unit else None)
        self.save(e)
        return e

    def observe(self, e: Escalation, when: datetime, kind: str = "staff",
                late: bool = False) -> None:
        self.save(Observation(escalation_id=e.id, observed_at=when, recorded_by="t",
                              observer_kind=kind, seen="ok", late=late))


def build(factory: Factory) -> Program:
    p = Program(factory)
    r = p.r
    pairs = [p.pairing(x, at(15, month=2)) for x in r[:6]]
    p.pairing(r[6], at(15, month=2), at(10), "keep_apart")     # active in March, then ended
    p.pairing(r[7], at(1, month=2), at(20, month=2), "completed")  # ended before March
    p.pairing(r[8], at(1, month=4))                            # activated after March
    wellbeing = [(2, 4), (1, 2), (4, 2), (1, 4), (3, 2), (5, 4)]  # +2 +1 -2 +3 -1 -1
    for i, pair in enumerate(pairs):
        before, after = wellbeing[i]
        p.session(at(5 + i), pairing=pair, topics=["coping", "family"],
                  attendees=[(r[i], "attended", before, after)])
    p.session(at(20), minutes=90, topics=["grief"],
              attendees=[(r[6], "attended", None, None), (r[7], "attended", None, None),
                         (r[8], "absent", None, None), (r[9], "declined", None, None)])
    p.session(at(21), pairing=pairs[0], status="cancelled")
    p.session(at(10, month=2), pairing=pairs[1], topics=["grief"])
    # Escalations in March: tiers low 2, moderate 1, high 2, imminent 1; units A 3, B 2, none 1.
    e1 = p.escalation(r[0], "high", at(2), at(2, 10, 10), resolved=at(2, 11))
    p.observe(e1, at(2, 10, 10))
    p.observe(e1, at(2, 10, 25))
    p.observe(e1, at(2, 10, 40))
    p.observe(e1, at(2, 10, 55))          # every gap <= 15 minutes: met
    e2 = p.escalation(r[1], "high", at(3), at(3, 10, 20), breached=True, resolved=at(3, 11))
    p.observe(e2, at(3, 10, 10))
    p.observe(e2, at(3, 10, 25), kind="peer")   # peers never count: a 35-minute gap
    p.observe(e2, at(3, 10, 45))
    p.observe(e2, at(3, 10, 55), late=True)
    e3 = p.escalation(r[4], "moderate", at(4), at(4, 10, 30), resolved=at(4, 10, 50))
    p.observe(e3, at(4, 10, 25))          # gaps 25, 25 <= 30: met
    p.escalation(r[6], "low", at(5), at(5, 12))
    p.escalation(None, "imminent", at(6), unit=p.b, resolved=at(6, 10, 3))  # 3-minute watch: met
    p.escalation(r[8], "low", at(7), at(7, 11))
    p.escalation(r[0], "high", at(20, month=2), at(20, 10, 5, month=2))      # February
    # Training: enrollments in March by 3 people, 2 of them completing; one in February.
    course = factory.course(required=False, title="Elective")
    for person, status, done in ((r[0], "completed", at(12)), (r[1], "completed", at(13)),
                                 (r[2], "enrolled", None)):
        p.save(Enrollment(participant_id=person.id, course_id=course.id, status=status,
                          enrolled_by="t", enrolled_at=at(1), completed_at=done))
    p.save(Enrollment(participant_id=r[3].id, course_id=course.id, enrolled_by="t",
                      enrolled_at=at(1, month=2)))
    # Referrals: r0 (4.08 days to the session of the 5th), r1 twice (the first counts: 5 days),
    # r6 (10 days to the group), r9 (declined the group: no session yet); r2 in February.
    for person, when in ((r[0], at(1, 8)), (r[1], at(1)), (r[1], at(3)), (r[6], at(10)),
                         (r[9], at(15)), (r[2], at(20, month=2))):
        p.save(Referral(facility_id=p.facility.id, network="incarcerated",
                        participant_id=person.id, source="officer",
                        reason_category="isolation", urgency="routine", received_at=when,
                        referred_by="t"))
    return p


def cells(settings: Settings, p: Program, month: str = "2026-03") -> dict[tuple[Any, ...], Cell]:
    async def run() -> list[Cell]:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                fig = Figures(session, settings, Scope(p.facility.id, "incarcerated"), NOW)
                pop = await fig.population()
                return await fig.month(months_between(month, month, UTC)[0], pop)
        finally:
            await engine.dispose()
    return {(c.section, c.figure, c.breakdown, c.key): c for c in asyncio.run(run())}


def value(got: dict[tuple[Any, ...], Cell], section: str, figure: str,
          breakdown: str | None = None, key: str | None = None) -> Any:
    return got[(section, figure, breakdown, key)].value


def test_every_figure_of_a_month(factory: Factory, settings: Settings) -> None:
    p = build(factory)
    got = cells(settings, p)
    v = lambda *a: value(got, *a)  # noqa: E731
    # Referrals and timeliness (per person, from their first referral of the month).
    assert v("reach", "people_referred") == 4
    assert v("timeliness", "days_to_first_session_median") == 5.0
    assert v("timeliness", "days_to_first_session_p90") == 10.0
    assert got[("timeliness", "days_to_first_session_median", None, None)].n == 3
    # Reach: r0..r5 (one-to-one) and r6, r7 (the group: attended); r8 absent, r9 declined;
    # supporters facilitate, they are not supported.
    assert v("reach", "people_supported") == 8
    assert {k[3]: c.value for k, c in got.items() if k[:3] == ("reach", "people_supported",
                                                               "unit")} == {"A": 5, "B": 3}
    assert v("reach", "active_pairings") == 7
    assert v("reach", "groups_held") == 1
    assert v("reach", "attendance_rate") == 0.5
    assert got[("reach", "attendance_rate", None, None)].n == 4
    # Sessions: 7 completed in March (the cancelled one and February's are not).
    assert v("sessions", "sessions_held") == 7
    assert v("sessions", "supporter_hours") == 7.5
    assert {k[3]: c.value for k, c in got.items() if k[1] == "sessions_by_topic"} == \
        {"coping": 6, "family": 6, "grief": 1}
    # Wellbeing: per person +2 +1 -2 +3 -1 -1.
    assert v("wellbeing", "mean_change") == 0.33
    assert got[("wellbeing", "mean_change", None, None)].n == 6
    assert v("wellbeing", "share_improved") == 0.5
    # Crisis.
    assert v("crisis", "escalations") == 6
    assert {t: v("crisis", "escalations", "tier", t)
            for t in ("low", "moderate", "high", "imminent")} == \
        {"low": 2, "moderate": 1, "high": 2, "imminent": 1}
    assert {u: v("crisis", "escalations", "unit", u) for u in ("A", "B", "none")} == \
        {"A": 3, "B": 2, "none": 1}
    assert v("crisis", "escalations_per_100") == 50.0          # 6 of 12 people
    assert v("crisis", "escalations_per_100", "unit", "A") == round(300 / 7, 2)
    assert v("crisis", "escalations_per_100", "unit", "B") == 50.0
    assert v("crisis", "escalations_per_100", "tier", "high") == round(200 / 12, 2)
    assert v("crisis", "breach_rate") == round(1 / 6, 4)
    assert v("crisis", "ack_minutes_median", "tier", "high") == 10.0   # 10 and 20: rank 1
    assert v("crisis", "ack_minutes_p90", "tier", "high") == 20.0      # rank ceil(1.8) = 2
    assert v("crisis", "ack_minutes_median", "tier", "low") == 60.0    # 120 and 60
    assert v("crisis", "ack_minutes_p90", "tier", "low") == 120.0
    assert v("crisis", "ack_minutes_median", "tier", "moderate") == 30.0
    assert v("crisis", "ack_minutes_median", "tier", "imminent") is None  # never acknowledged
    # Cadence: e1 met, e2 not (peer and late entries never count), e3 met, the imminent met.
    assert v("crisis", "observation_cadence_met") == 0.75
    assert got[("crisis", "observation_cadence_met", None, None)].n == 4
    # Training: March enrollments by 3 people (not February's), 2 completions; supporters
    # certified today (their certificates run 24 months): none expiring, none lapsed.
    assert v("training", "enrolled") == 3
    assert v("training", "completed") == 2
    assert v("training", "expiring") == 0
    assert v("training", "lapsed") == 0
    # Safety.
    assert v("safety", "pairings_ended_keep_apart") == 1


def test_a_month_is_computed_from_that_month_alone(factory: Factory, settings: Settings) -> None:
    p = build(factory)
    feb = cells(settings, p, "2026-02")
    assert value(feb, "sessions", "sessions_held") == 1
    assert value(feb, "crisis", "escalations") == 1
    assert value(feb, "reach", "active_pairings") == 8     # r0..r6 and r7 (ended on the 20th)
    assert value(feb, "training", "enrolled") == 1
    assert value(feb, "reach", "people_referred") == 1
    assert value(feb, "timeliness", "days_to_first_session_median") == 15.0  # on March 7
    assert value(feb, "safety", "pairings_ended_keep_apart") == 0


def test_certificates_expiring_and_lapsed(factory: Factory, settings: Settings) -> None:
    facility = factory.facility(timezone="UTC")
    course = factory.course(title="Foundations")
    # Certified on these days; valid 24 months: until 2026-04-10, 2026-05-20, 2026-06-25,
    # 2026-03-05 (lapsed in March), 2027-01-01.
    for signed in (date(2024, 4, 10), date(2024, 5, 20), date(2024, 6, 25), date(2024, 3, 5),
                   date(2025, 1, 1)):
        person = factory.participant(facility, is_supporter=True)
        factory.enrollment(person, course, status="completed",
                           completed_at=datetime(2024, 1, 2, tzinfo=UTC))
        factory.signature(person, signed)
    p = Program.__new__(Program)
    p.f, p.facility = factory, facility
    got = cells(settings, p)   # as of 2026-03-31 (NOW is later)
    assert value(got, "training", "certified") == 4
    assert {b: value(got, "training", "expiring", "days", b)
            for b in ("0_30", "31_60", "61_90")} == {"0_30": 1, "31_60": 1, "61_90": 1}
    assert value(got, "training", "expiring") == 3
    assert value(got, "training", "lapsed") == 1


def test_other_networks_and_facilities_are_not_counted(factory: Factory,
                                                        settings: Settings) -> None:
    p = build(factory)
    other = factory.facility(timezone="UTC")
    staff = factory.participant(p.facility, "staff")
    factory.escalation(staff).raised_at  # noqa: B018 (a staff-network escalation now)
    elsewhere = factory.recipient(other)
    p.save(Escalation(participant_id=elsewhere.id, facility_id=other.id, network="incarcerated",
                      category="self_harm", description="x", tier="low", status="open",
                      ack_deadline=at(9), raised_by="t", raised_at=at(9)))
    got = cells(settings, p)
    assert value(got, "crisis", "escalations") == 6
    assert uuid.UUID(str(p.facility.id))


class JoinedFigures(Figures):
    """The attendance as the report read it before the attendance rows carried their session's
    facility, network and time: the month's sessions joined to every attendance row."""

    def _attendance(self, m: Month, *where: Any) -> Any:
        sessions = select(S.id, S.facilitator_id).where(*self._sessions(m, *where)).subquery("s")
        lists = select(A.session_id, A.participant_id, A.status, A.wellbeing_before,
                       A.wellbeing_after).subquery("a")
        return sessions, lists, sessions.join(lists, lists.c.session_id == sessions.c.id)


def figures_of(settings: Settings, scope: Scope, month: str, tz: Any,
               kind: type[Figures] = Figures) -> dict[tuple[Any, ...], Any]:
    async def run() -> list[Cell]:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                fig = kind(session, settings, scope, NOW)
                pop = await fig.population()
                return await fig.month(months_between(month, month, tz)[0], pop)
        finally:
            await engine.dispose()
    return {(c.section, c.figure, c.breakdown, c.key): (c.value, c.n, c.m)
            for c in asyncio.run(run())}


def test_attendance_by_its_own_copy_gives_the_joined_figures(factory: Factory,
                                                              settings: Settings) -> None:
    """Varied data (two facilities, one of them off UTC with sessions around midnight at the
    months' edges; both networks; every session status and kind; facilitators on and off the
    lists; every attendance status; wellbeing or none): each month's figures are the same read
    through the attendance rows' copy of their session as through the join from every row."""
    rng = random.Random(14)  # noqa: S311
    chicago = factory.facility(timezone="America/Chicago")
    other = factory.facility(timezone="UTC")
    places = []
    for facility in (chicago, other):
        units = [factory.unit(facility), factory.unit(facility), None]
        for network in ("incarcerated", "staff"):
            people = [factory.participant(facility, network, is_recipient=True,
                                          housing_unit_id=u.id if u else None)
                      for u in units * 3]
            places.append((facility, network, people))
    rows: list[Any] = []
    for _ in range(160):
        facility, network, people = rng.choice(places)
        day = rng.choice([datetime(2026, mo, d, tzinfo=UTC)
                          for mo in (2, 3, 4, 5) for d in (1, 2, 14, 28)])
        when = day + timedelta(hours=rng.randint(0, 8), minutes=rng.randint(0, 59))
        kind = rng.choice(("group", "one_to_one"))
        lead = rng.choice(people) if kind == "one_to_one" or rng.random() < 0.7 else None
        s = SupportSession(kind=kind, facilitator_id=lead.id if lead else None,
                           facility_id=facility.id, network=network,
                           status=rng.choice(("completed", "completed", "completed",
                                              "cancelled", "no_show", "scheduled")),
                           scheduled_at=when, scheduled_by="t", duration_minutes=60,
                           topics=[])
        rows.append(s)
        chosen = rng.sample(people, rng.randint(0, 4))
        if lead and lead not in chosen and rng.random() < 0.8:
            chosen.append(lead)
        for person in chosen:
            paired = rng.random() < 0.6
            rows.append(SessionAttendee.of(
                s, person.id, status=rng.choice(("invited", "attended", "attended", "declined",
                                                 "absent")),
                wellbeing_before=rng.randint(1, 5) if paired else None,
                wellbeing_after=rng.randint(1, 5) if paired or rng.random() < 0.2 else None))
    with Session(factory.engine, expire_on_commit=False) as db:
        db.add_all([r for r in rows if isinstance(r, SupportSession)])
        db.flush()
        db.add_all([r for r in rows if isinstance(r, SessionAttendee)])
        db.commit()
    counted = 0
    for facility, network, _ in places:
        tz = ZoneInfo(facility.timezone)
        for month in ("2026-02", "2026-03", "2026-04", "2026-05"):
            scope = Scope(facility.id, network)
            new = figures_of(settings, scope, month, tz)
            assert new == figures_of(settings, scope, month, tz, JoinedFigures), (network, month)
            counted += new[("reach", "people_supported", None, None)][0]
    assert counted > 40
