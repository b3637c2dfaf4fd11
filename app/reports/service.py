"""The program report: figures by facility, network and month over a range of whole months,
de-identified (facility and unit codes, months; never names, ids or dates) and suppressed
(app/reports/suppression.py) for every reader."""

from __future__ import annotations

import re
from datetime import datetime
from zoneinfo import ZoneInfo

from pydantic import BaseModel
from pydantic import Field as PField
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import utcnow
from app.errors import NotFound, RuleViolation
from app.models import Facility
from app.reports import suppression
from app.reports.figures import Figures, Scope, months_between
from app.security.principal import Principal
from app.services import scoping

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
MAX_MONTHS = 36


class Figure(BaseModel):
    facility: str = PField(description="The facility's code")
    network: str
    period: str = PField(description="A month (YYYY-MM), or a range of months "
                                     "(YYYY-MM..YYYY-MM) for the sums of additive figures")
    section: str = PField(description="reach, timeliness, sessions, wellbeing, crisis, "
                                      "training or safety")
    figure: str
    breakdown: str | None = PField(None, description="unit, tier, topic or days; null: the "
                                                     "total")
    key: str | None = PField(None, description="The unit code, tier, topic or band")
    value: float | None = PField(description="null when suppressed (or nothing to measure)")
    n: int | None = PField(None, description="The people a rate or average is over (shown "
                                             "when the figure is)")
    suppressed: bool


class ProgramReport(BaseModel):
    start: str = PField(alias="from")
    end: str = PField(alias="to")
    min_cell: int = PField(description="Counts of fewer people than this are suppressed")
    facilities: list[str]
    networks: list[str]
    figures: list[Figure]

    model_config = {"populate_by_name": True}


def check_range(first: str, last: str | None) -> str:
    last = last or first
    for m in (first, last):
        if not MONTH.match(m):
            raise RuleViolation("Months are YYYY-MM.", code="invalid_month")
    if last < first:
        raise RuleViolation("`to` comes before `from`.", code="invalid_range")
    y1, m1 = (int(x) for x in first.split("-"))
    y2, m2 = (int(x) for x in last.split("-"))
    if (y2 - y1) * 12 + (m2 - m1) + 1 > MAX_MONTHS:
        raise RuleViolation(f"A report covers at most {MAX_MONTHS} months.",
                            code="range_too_long")
    return last


async def program(*, session: AsyncSession, settings: Settings, principal: Principal,
                  first: str, last: str | None = None, facility: str | None = None,
                  network: str | None = None, now: datetime | None = None) -> ProgramReport:
    last = check_range(first, last)
    now = now or utcnow()
    nets, facs = scoping.report_scope(principal)
    if network is not None:
        if network not in nets:
            raise NotFound("No such network.")
        nets = frozenset({network})
    F = Facility.__table__.c
    stmt = select(F.id, F.code, F.timezone).order_by(F.code)
    if facs is not None:
        stmt = stmt.where(F.id.in_(sorted(facs)))
    if facility is not None:
        stmt = stmt.where(F.code == facility)
    places = (await session.execute(stmt)).all()
    if facility is not None and not places:
        raise NotFound("No such facility.")
    k = settings.report_min_cell
    out: list[Figure] = []
    for place in places:
        months = months_between(first, last, ZoneInfo(place.timezone))
        for net in sorted(nets):
            figures = Figures(session, settings, Scope(place.id, net), now)
            population = await figures.population()
            done = [suppression.suppress_month(await figures.month(m, population), k)
                    for m in months]
            rows = [c for month in done for c in month]
            if len(months) > 1:
                rows += suppression.range_rows(done, f"{first}..{last}")
            out += [_figure(place.code, net, c) for c in rows if not c.internal]
    return ProgramReport(start=first, end=last, min_cell=k, facilities=[p.code for p in places],
                         networks=sorted(nets), figures=out)


def _figure(code: str, network: str, c: suppression.Cell) -> Figure:
    value, n = suppression.published(c)
    return Figure(facility=code, network=network, period=c.period, section=c.section,
                  figure=c.figure, breakdown=c.breakdown, key=c.key, value=value, n=n,
                  suppressed=c.suppressed)
