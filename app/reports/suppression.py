"""Small-cell suppression (DOMAIN rule 9), pure: which figures of a report are withheld.

The method (docs/reports.md says it for readers):
1. Cells are whole months of one facility and network; a range is a list of months. A month's
   figures are computed from that month alone, so two overlapping ranges show the same month
   rows, and a range row is a sum of its month rows: nothing is learnt by differencing ranges.
2. Primary: a count of people (or of escalations, each about a person) from 1 to k-1 is
   withheld; a rate, average, median or percentile over fewer than k people is withheld; a
   share is withheld when its numerator or its complement is from 1 to k-1 (either could be
   multiplied back out of the share and its n).
3. Complementary, per breakdown (by housing unit, by tier, by band), whose cells add up to the
   month's total: a breakdown is shown whole or not at all. When one of its cells is withheld,
   all are: with the total shown, a withheld cell beside shown ones is the total minus them,
   and two or three withheld ones can be pinned by their sum and each being from 1 to k-1
   (tests/test_reports_suppression.py found 3 + 3 with k = 4). The total stands on its own
   (withheld when it is itself from 1 to k-1). A rate per 100 people is
   withheld with its count or its population (the people housed in the unit, itself a count
   suppressed this way, and never shown: the rate and the count would give it back).
4. A range row of an additive figure (sessions, hours, escalations) is shown only when every
   one of its month rows is; counts of distinct people have no range row (the distinct count
   of a range minus that of a shorter one would count the people seen only in the difference).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum


class Kind(StrEnum):
    people = "people"   # distinct people: suppressed, no range row
    events = "events"   # escalations, pairings: each about a person; suppressed, additive
    tally = "tally"     # sessions, hours: not about a person; shown, additive
    share = "share"     # m of n people
    stat = "stat"       # a mean, median or percentile over n people
    per100 = "per100"   # a count (the linked cell) per 100 of n people


ADDITIVE = frozenset({Kind.events, Kind.tally})
COUNTED = frozenset({Kind.people, Kind.events})


@dataclass(frozen=True)
class Cell:
    period: str
    section: str
    figure: str
    value: float | None
    kind: Kind
    breakdown: str | None = None
    key: str | None = None
    n: int | None = None          # the people a share, stat or per100 is over
    m: int | None = None          # a share's numerator
    # per100: the counts it follows, as (figure, key): its count and its population
    link: tuple[tuple[str, str | None], ...] = ()
    internal: bool = False        # used for suppression only, never published (a population)
    suppressed: bool = False

    @property
    def group(self) -> tuple[str, str, str | None]:
        return self.section, self.figure, self.breakdown


def _small(v: float | None, k: int) -> bool:
    return v is not None and 0 < v < k


def primary(c: Cell, k: int) -> bool:
    if c.kind in COUNTED:
        return _small(c.value, k)
    if c.kind == Kind.share:
        n, m = c.n or 0, c.m or 0
        return n < k or _small(m, k) or _small(n - m, k)
    if c.kind in (Kind.stat, Kind.per100):
        return (c.n or 0) < k
    return False


def suppress_month(cells: Iterable[Cell], k: int) -> list[Cell]:
    """One facility, network and month: primary, then complementary, then linked rates."""
    out = [replace(c, suppressed=primary(c, k)) for c in cells]
    groups: dict[tuple[str, str, str | None], list[int]] = defaultdict(list)
    for i, c in enumerate(out):
        if c.breakdown is not None and c.kind in COUNTED:
            groups[c.group].append(i)
    for members in groups.values():
        # A breakdown is shown whole or not at all: with its total shown, cells withheld
        # beside shown ones could be worked out (or pinned between 1 and k-1) by subtraction.
        if any(out[i].suppressed for i in members):
            for i in members:
                out[i] = replace(out[i], suppressed=True)
    counts = {(c.section, c.figure, c.key): c for c in out if c.kind in COUNTED}
    for i, c in enumerate(out):
        if c.kind == Kind.per100:
            linked = [counts.get((c.section, f, key)) for f, key in c.link]
            if not linked or any(x is None or x.suppressed for x in linked):
                out[i] = replace(c, suppressed=True)
    return out


def range_rows(months: list[list[Cell]], label: str) -> list[Cell]:
    """The range's rows of additive figures: the sum of the month rows, shown only when every
    month's row is shown (each month's rows already suppressed)."""
    by: dict[tuple[str, str, str | None, str | None], list[Cell]] = defaultdict(list)
    for month in months:
        for c in month:
            if c.kind in ADDITIVE and not c.internal:
                by[(c.section, c.figure, c.breakdown, c.key)].append(c)
    out = []
    for (section, figure, breakdown, key), cs in by.items():
        if len(cs) != len(months):
            continue
        hidden = any(c.suppressed for c in cs)
        total = sum(c.value or 0 for c in cs)
        out.append(Cell(period=label, section=section, figure=figure, breakdown=breakdown,
                        key=key, kind=cs[0].kind, value=round(total, 2), suppressed=hidden))
    return out


def published(c: Cell) -> tuple[float | None, int | None]:
    """What leaves the service of a cell: its value and n, or nothing when withheld."""
    if c.suppressed:
        return None, None
    return c.value, c.n if c.kind in (Kind.share, Kind.stat) else None
