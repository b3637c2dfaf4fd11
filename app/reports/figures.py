"""The figures of one facility, network and month, aggregated by the database (SQLite and
PostgreSQL alike): a few grouped queries per month, never a row per record to the API.

Each month is computed from that month alone (app/reports/suppression.py relies on it).
Percentiles are nearest-rank (the value at rank ceil(p * n)), picked by window functions.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import and_, case, distinct, func, literal, literal_column, or_, select, true, union_all
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.models import (
    Enrollment,
    Escalation,
    HousingUnit,
    Observation,
    Pairing,
    Participant,
    Referral,
    SessionAttendee,
    SupportSession,
)
from app.models.escalation import CADENCE_MINUTES, TIER_ORDER
from app.reports.suppression import Cell, Kind
from app.services import certification
from app.services.escalations.watch import COUNTS_TOWARD_CADENCE

S = SupportSession.__table__.c
A = SessionAttendee.__table__.c
P = Participant.__table__.c
HU = HousingUnit.__table__.c
PR = Pairing.__table__.c
E = Escalation.__table__.c
O = Observation.__table__.c  # noqa: E741
EN = Enrollment.__table__.c
R = Referral.__table__.c

NO_UNIT = "none"
TIERS = [t.value for t in sorted(TIER_ORDER, key=TIER_ORDER.__getitem__)]


@dataclass(frozen=True)
class Month:
    label: str       # YYYY-MM
    lo: datetime     # the month's first instant in the facility's timezone, as UTC
    hi: datetime     # the next month's first instant
    last_day: date


@dataclass(frozen=True)
class Scope:
    facility_id: uuid.UUID
    network: str


def seconds(later: Any, earlier: Any, dialect: str) -> Any:
    """Whole seconds between two timestamps (SQLite's julianday is a float: rounded)."""
    if dialect == "postgresql":
        return func.round(func.extract("epoch", later - earlier))
    return func.round((func.julianday(later) - func.julianday(earlier)) * 86400.0)


def _unit_code() -> Any:
    # A literal in the SQL text (not a parameter), so GROUP BY matches the selected expression.
    return func.coalesce(HU.code, literal_column(f"'{NO_UNIT}'"))


class Figures:
    """The month's cells for one scope (facility and network)."""

    def __init__(self, session: AsyncSession, settings: Settings, scope: Scope,
                 now: datetime) -> None:
        self.session, self.settings, self.scope, self.now = session, settings, scope, now
        self.dialect = session.bind.dialect.name
        self._cache: dict[tuple[str, str], Any] = {}

    async def _rows(self, stmt: Any) -> list[Any]:
        return list((await self.session.execute(stmt)).all())

    def _sessions(self, m: Month, *where: Any) -> list[Any]:
        return [S.facility_id == self.scope.facility_id, S.network == self.scope.network,
                S.status == "completed", S.scheduled_at >= m.lo, S.scheduled_at < m.hi, *where]

    async def month(self, m: Month, population: dict[str, int]) -> list[Cell]:
        cells: list[Cell] = []
        for part in (self.reach, self.timeliness, self.sessions, self.wellbeing, self.crisis, self.training,
                     self.safety):
            cells += await part(m, population)
        return cells

    async def population(self) -> dict[str, int]:
        """People of the network at the facility now, by housing unit (the denominator of
        per-100 rates; the history of moves is not kept, so every month uses today's)."""
        rows = await self._rows(
            select(_unit_code(), func.count()).select_from(
                Participant.__table__.outerjoin(HousingUnit.__table__, HU.id == P.housing_unit_id))
            .where(P.facility_id == self.scope.facility_id, P.network == self.scope.network,
                   P.archived_at.is_(None), P.merged_into_id.is_(None))
            .group_by(_unit_code()))
        return {r[0]: int(r[1]) for r in rows}

    # --- reach ---------------------------------------------------------------------------
    async def reach(self, m: Month, population: dict[str, int]) -> list[Cell]:
        referred = (await self.session.execute(
            select(func.count(distinct(R.participant_id))).where(*self._referrals(m)))
        ).scalar_one()
        c = [Cell(m.label, "reach", "people_referred", int(referred), Kind.people)]
        supported: dict[str, int] = {}
        for u, n, _, _, _ in await self._people(m):
            if n:
                supported[u] = int(n)
        total = sum(supported.values())
        c.append(Cell(m.label, "reach", "people_supported", total, Kind.people))
        c += [Cell(m.label, "reach", "people_supported", n, Kind.people, "unit", u)
              for u, n in sorted(supported.items())]
        active = (await self.session.execute(
            select(func.count()).where(
                PR.facility_id == self.scope.facility_id, PR.network == self.scope.network,
                PR.activated_at.is_not(None), PR.activated_at < m.hi,
                or_(PR.ended_at.is_(None), PR.ended_at >= m.lo)))).scalar_one()
        c.append(Cell(m.label, "reach", "active_pairings", int(active), Kind.events))
        groups = (await self.session.execute(
            select(func.count()).where(*self._sessions(m, S.kind == "group")))).scalar_one()
        c.append(Cell(m.label, "reach", "groups_held", int(groups), Kind.tally))
        sessions, a, joined = self._attendance(m, S.kind == "group")
        att = (await self.session.execute(
            select(func.count(), func.sum(case((a.c.status == "attended", 1), else_=0)),
                   func.count(distinct(a.c.participant_id)))
            .select_from(joined)
            .where(or_(sessions.c.facilitator_id.is_(None),
                       a.c.participant_id != sessions.c.facilitator_id)))).one()
        rows, attended, people = int(att[0]), int(att[1] or 0), int(att[2])
        c.append(Cell(m.label, "reach", "attendance_rate",
                      round(attended / rows, 4) if rows else None, Kind.stat, n=people))
        return c

    # --- timeliness ----------------------------------------------------------------------
    def _referrals(self, m: Month) -> list[Any]:
        return [R.facility_id == self.scope.facility_id, R.network == self.scope.network,
                R.received_at >= m.lo, R.received_at < m.hi]

    async def timeliness(self, m: Month, population: dict[str, int]) -> list[Cell]:
        """People first referred this month: days from that referral to the first session
        they attended after it (here), among those who have had one so far."""
        first_ref = (select(R.participant_id.label("pid"), func.min(R.received_at).label("at"))
                     .where(*self._referrals(m)).group_by(R.participant_id).subquery())
        first_session = (
            select(first_ref.c.pid, first_ref.c.at, func.min(S.scheduled_at).label("seen"))
            .select_from(first_ref.join(SessionAttendee.__table__,
                                        A.participant_id == first_ref.c.pid)
                         .join(SupportSession.__table__, S.id == A.session_id))
            .where(S.facility_id == self.scope.facility_id, S.network == self.scope.network,
                   S.status == "completed", S.scheduled_at >= first_ref.c.at,
                   A.status.notin_(("declined", "absent")))
            .group_by(first_ref.c.pid, first_ref.c.at).subquery())
        secs = seconds(first_session.c.seen, first_session.c.at, self.dialect)
        ranked = select(secs.label("secs"), func.row_number().over(order_by=secs).label("rn"),
                        func.count().over().label("n")).subquery()
        rows = await self._rows(select(ranked.c.n, ranked.c.rn, ranked.c.secs).where(
            or_(ranked.c.rn == (ranked.c.n + 1) // 2, ranked.c.rn == (ranked.c.n * 9 + 9) // 10)))
        n, median, p90 = 0, None, None
        for total, rn, secs_ in rows:
            n = int(total)
            if rn == (n + 1) // 2:
                median = round(float(secs_) / 86400, 1)
            if rn == (n * 9 + 9) // 10:
                p90 = round(float(secs_) / 86400, 1)
        return [Cell(m.label, "timeliness", "days_to_first_session_median", median, Kind.stat,
                     n=n),
                Cell(m.label, "timeliness", "days_to_first_session_p90", p90, Kind.stat, n=n)]

    # --- sessions ------------------------------------------------------------------------
    async def sessions(self, m: Month, population: dict[str, int]) -> list[Cell]:
        held = (await self.session.execute(
            select(func.count(), func.coalesce(func.sum(S.duration_minutes), 0))
            .where(*self._sessions(m)))).one()
        c = [Cell(m.label, "sessions", "sessions_held", int(held[0]), Kind.tally),
             Cell(m.label, "sessions", "supporter_hours", round(int(held[1]) / 60, 2),
                  Kind.tally)]
        if self.dialect == "postgresql":
            topic = func.jsonb_array_elements_text(S.topics).table_valued("value").alias("t")
        else:
            topic = func.json_each(S.topics).table_valued("value").alias("t")
        rows = await self._rows(
            select(topic.c.value, func.count()).select_from(SupportSession.__table__)
            .join(topic, true())
            .where(*self._sessions(m)).group_by(topic.c.value))
        c += [Cell(m.label, "sessions", "sessions_by_topic", int(n), Kind.tally, "topic", str(t))
              for t, n in sorted(rows)]
        return c

    # --- wellbeing -----------------------------------------------------------------------
    def _attendance(self, m: Month, *where: Any) -> Any:
        """The month's completed sessions joined to their lists: the lists read by their own
        copy of the session's facility, network and time (an index range on the attendance
        rows, not every attendance row ever written), the sessions by theirs."""
        sessions = select(S.id, S.facilitator_id).where(*self._sessions(m, *where)).subquery("s")
        lists = select(A.session_id, A.participant_id, A.status, A.wellbeing_before,
                       A.wellbeing_after).where(
            A.session_facility_id == self.scope.facility_id,
            A.session_network == self.scope.network,
            A.session_scheduled_at >= m.lo, A.session_scheduled_at < m.hi).subquery("a")
        return sessions, lists, sessions.join(lists, lists.c.session_id == sessions.c.id)

    async def _people(self, m: Month) -> list[Any]:
        """Per housing unit: people supported (on a list, not declined or absent, not the
        facilitator), people with a paired wellbeing score, the sum of their per-person mean
        changes, and how many improved; one pass over the month's attendance, cached."""
        key = ("people", m.label)
        if key in self._cache:
            return self._cache[key]  # type: ignore[no-any-return]
        sessions, a, joined = self._attendance(m)
        on_list = and_(a.c.status.notin_(("declined", "absent")),
                       or_(sessions.c.facilitator_id.is_(None),
                           a.c.participant_id != sessions.c.facilitator_id))
        paired = and_(a.c.wellbeing_before.is_not(None), a.c.wellbeing_after.is_not(None))
        person = (select(a.c.participant_id.label("pid"),
                         func.max(case((on_list, 1), else_=0)).label("supported"),
                         func.avg(case((paired, a.c.wellbeing_after - a.c.wellbeing_before),
                                       else_=None)).label("change"))
                  .select_from(joined).group_by(a.c.participant_id).subquery("person"))
        unit = _unit_code()
        rows = await self._rows(
            select(unit, func.sum(person.c.supported), func.count(person.c.change),
                   func.sum(person.c.change), func.sum(case((person.c.change > 0, 1), else_=0)))
            .select_from(person.join(Participant.__table__, P.id == person.c.pid)
                         .outerjoin(HousingUnit.__table__, HU.id == P.housing_unit_id))
            .group_by(unit))
        self._cache[key] = rows
        return rows

    async def wellbeing(self, m: Month, population: dict[str, int]) -> list[Cell]:
        rows = await self._people(m)
        n = sum(int(r[2]) for r in rows)
        change = sum(float(r[3] or 0) for r in rows)
        improved = sum(int(r[4] or 0) for r in rows)
        return [
            Cell(m.label, "wellbeing", "mean_change", round(change / n, 2) if n else None,
                 Kind.stat, n=n),
            Cell(m.label, "wellbeing", "share_improved", round(improved / n, 4) if n else None,
                 Kind.share, n=n, m=improved),
        ]

    # --- crisis --------------------------------------------------------------------------
    def _escalations(self, m: Month) -> list[Any]:
        return [E.facility_id == self.scope.facility_id, E.network == self.scope.network,
                E.raised_at >= m.lo, E.raised_at < m.hi]

    async def crisis(self, m: Month, population: dict[str, int]) -> list[Cell]:
        unit = _unit_code()
        rows = await self._rows(
            select(E.tier, unit, func.count(), func.sum(case((E.breached.is_(True), 1), else_=0)))
            .select_from(Escalation.__table__
                         .outerjoin(Participant.__table__, P.id == E.participant_id)
                         .outerjoin(HousingUnit.__table__,
                                    HU.id == func.coalesce(E.location_unit_id, P.housing_unit_id)))
            .where(*self._escalations(m)).group_by(E.tier, unit))
        total = sum(int(r[2]) for r in rows)
        breached = sum(int(r[3] or 0) for r in rows)
        by_tier = {t: 0 for t in TIERS}
        by_unit = {u: 0 for u in population}
        for tier, u, n, _ in rows:
            by_tier[tier] = by_tier.get(tier, 0) + int(n)
            by_unit[u] = by_unit.get(u, 0) + int(n)
        pop = sum(population.values())
        L = m.label

        def per100(count: int, people: int) -> float | None:
            return round(100 * count / people, 2) if people else None

        c = [Cell(L, "crisis", "escalations", total, Kind.events),
             Cell(L, "crisis", "population", pop, Kind.people, internal=True),
             Cell(L, "crisis", "escalations_per_100", per100(total, pop), Kind.per100, n=pop,
                  link=(("escalations", None), ("population", None)))]
        for t, n in by_tier.items():
            c += [Cell(L, "crisis", "escalations", n, Kind.events, "tier", t),
                  Cell(L, "crisis", "escalations_per_100", per100(n, pop), Kind.per100, "tier", t,
                       n=pop, link=(("escalations", t), ("population", None)))]
        for u, n in sorted(by_unit.items()):
            people = population.get(u, 0)
            c += [Cell(L, "crisis", "escalations", n, Kind.events, "unit", u),
                  Cell(L, "crisis", "population", people, Kind.people, "unit", u, internal=True),
                  Cell(L, "crisis", "escalations_per_100", per100(n, people), Kind.per100,
                       "unit", u, n=people, link=(("escalations", u), ("population", u)))]
        c.append(Cell(L, "crisis", "breach_rate", round(breached / total, 4) if total else None,
                      Kind.share, n=total, m=breached))
        c += await self._acknowledgement(m)
        c += await self._observation(m)
        return c

    async def _acknowledgement(self, m: Month) -> list[Cell]:
        secs = seconds(E.acknowledged_at, E.raised_at, self.dialect)
        ranked = (select(E.tier.label("tier"), secs.label("secs"),
                         func.row_number().over(partition_by=E.tier, order_by=secs).label("rn"),
                         func.count().over(partition_by=E.tier).label("n"))
                  .where(*self._escalations(m), E.acknowledged_at.is_not(None)).subquery())
        median_rank = (ranked.c.n + 1) // 2      # ceil(n / 2)
        p90_rank = (ranked.c.n * 9 + 9) // 10    # ceil(9n / 10)
        rows = await self._rows(
            select(ranked.c.tier, ranked.c.n, ranked.c.rn, ranked.c.secs)
            .where(or_(ranked.c.rn == median_rank, ranked.c.rn == p90_rank)))
        found: dict[str, dict[str, Any]] = {}
        for tier, n, rn, secs_ in rows:
            f = found.setdefault(tier, {"n": int(n)})
            if rn == (int(n) + 1) // 2:
                f["median"] = round(float(secs_) / 60, 1)
            if rn == (int(n) * 9 + 9) // 10:
                f["p90"] = round(float(secs_) / 60, 1)
        c = []
        for t in TIERS:
            f = found.get(t, {"n": 0})
            c += [Cell(m.label, "crisis", "ack_minutes_median", f.get("median"), Kind.stat,
                       "tier", t, n=f["n"]),
                  Cell(m.label, "crisis", "ack_minutes_p90", f.get("p90"), Kind.stat,
                       "tier", t, n=f["n"])]
        return c

    async def _observation(self, m: Month) -> list[Cell]:
        """Escalations raised this month whose tier requires a staff cadence: the share whose
        watch (raise to resolution, or to now) never went longer than the cadence without a
        staff observation written on time (peer and late entries never count)."""
        cadenced = {t: mins for t, mins in CADENCE_MINUTES.items() if mins}
        cadence = case(*((E.tier == t, mins * 60) for t, mins in cadenced.items()), else_=None)
        end = func.coalesce(E.resolved_at, literal(self.now, E.raised_at.type))
        esc = (select(E.id.label("eid"), E.raised_at.label("lo"), end.label("hi"),
                      cadence.label("limit"))
               .where(*self._escalations(m), E.tier.in_(list(cadenced))).cte("esc"))
        points = union_all(
            select(esc.c.eid, esc.c.lo.label("t")),
            select(esc.c.eid, esc.c.hi.label("t")),
            select(esc.c.eid, O.observed_at.label("t"))
            .select_from(esc.join(Observation.__table__, O.escalation_id == esc.c.eid))
            .where(*COUNTS_TOWARD_CADENCE, O.observed_at >= esc.c.lo, O.observed_at <= esc.c.hi),
        ).subquery()
        gapped = select(points.c.eid, seconds(
            points.c.t, func.lag(points.c.t).over(partition_by=points.c.eid,
                                                  order_by=points.c.t), self.dialect)
            .label("gap")).subquery()
        widest = (select(gapped.c.eid, func.max(gapped.c.gap).label("gap"))
                  .group_by(gapped.c.eid).subquery())
        n, met = (await self.session.execute(
            select(func.count(), func.sum(case((widest.c.gap <= esc.c.limit, 1), else_=0)))
            .select_from(esc.join(widest, widest.c.eid == esc.c.eid)))).one()
        n, met = int(n), int(met or 0)
        return [Cell(m.label, "crisis", "observation_cadence_met",
                     round(met / n, 4) if n else None, Kind.share, n=n, m=met)]

    # --- training ------------------------------------------------------------------------
    async def training(self, m: Month, population: dict[str, int]) -> list[Cell]:
        mine = select(P.id).where(P.facility_id == self.scope.facility_id,
                                  P.network == self.scope.network)
        enrolled = (await self.session.execute(
            select(func.count(distinct(EN.participant_id))).where(
                EN.participant_id.in_(mine), EN.enrolled_at >= m.lo,
                EN.enrolled_at < m.hi))).scalar_one()
        completed = (await self.session.execute(
            select(func.count(distinct(EN.participant_id))).where(
                EN.participant_id.in_(mine), EN.status == "completed",
                EN.completed_at >= m.lo, EN.completed_at < m.hi))).scalar_one()
        L = m.label
        c = [Cell(L, "training", "enrolled", int(enrolled), Kind.people),
             Cell(L, "training", "completed", int(completed), Kind.people)]
        states = await certification.certified_among(
            self.session, self.settings,
            select(P.id).where(P.facility_id == self.scope.facility_id,
                               P.network == self.scope.network, P.is_supporter.is_(True)),
            self.scope.network)
        ref = min(m.last_day, self.now.date())
        first = m.last_day.replace(day=1)
        bands = {"0_30": 0, "31_60": 0, "61_90": 0}
        certified = lapsed = 0
        for st in states.values():
            if st.since is None or st.until is None:
                continue
            if st.since <= ref <= st.until:
                certified += 1
                days = (st.until - ref).days
                band = "0_30" if days <= 30 else "31_60" if days <= 60 else \
                    "61_90" if days <= 90 else None
                if band:
                    bands[band] += 1
            if first <= st.until < ref:
                lapsed += 1
        c.append(Cell(L, "training", "certified", certified, Kind.people))
        c.append(Cell(L, "training", "expiring", sum(bands.values()), Kind.people))
        c += [Cell(L, "training", "expiring", n, Kind.people, "days", b)
              for b, n in bands.items()]
        c.append(Cell(L, "training", "lapsed", lapsed, Kind.people))
        return c

    # --- safety --------------------------------------------------------------------------
    async def safety(self, m: Month, population: dict[str, int]) -> list[Cell]:
        ended = (await self.session.execute(
            select(func.count()).where(
                PR.facility_id == self.scope.facility_id, PR.network == self.scope.network,
                PR.end_reason == "keep_apart", PR.ended_at >= m.lo, PR.ended_at < m.hi))
        ).scalar_one()
        return [Cell(m.label, "safety", "pairings_ended_keep_apart", int(ended), Kind.events)]


def months_between(first: str, last: str, tz: Any) -> list[Month]:
    """Whole months from `first` to `last` (YYYY-MM), bounded in the facility's timezone."""
    y, mo = (int(x) for x in first.split("-"))
    ly, lmo = (int(x) for x in last.split("-"))
    out = []
    while (y, mo) <= (ly, lmo):
        ny, nmo = (y + 1, 1) if mo == 12 else (y, mo + 1)
        lo = datetime(y, mo, 1, tzinfo=tz)
        hi = datetime(ny, nmo, 1, tzinfo=tz)
        out.append(Month(f"{y:04d}-{mo:02d}", lo, hi, (hi - timedelta(days=1)).date()))
        y, mo = ny, nmo
    return out


__all__ = ["Figures", "Month", "Scope", "months_between"]
