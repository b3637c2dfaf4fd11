"""Suppression cannot be undone: for random small populations, every withheld cell could hold
at least two values given everything published (the other cells, the totals, the range rows
and which cells are withheld), found by trying every population that could have been."""

from __future__ import annotations

import itertools
from collections import Counter

from hypothesis import example, given, settings
from hypothesis import strategies as st

from app.reports.suppression import Cell, Kind, primary, range_rows, suppress_month

UNITS = ("A", "B", "C", "D")


def month(label: str, counts: tuple[int, ...], kind: Kind = Kind.people) -> list[Cell]:
    """A month's people (or escalations) by unit and in total."""
    cells = [Cell(label, "reach", "people", sum(counts), kind)]
    cells += [Cell(label, "reach", "people", n, kind, "unit", UNITS[i])
              for i, n in enumerate(counts)]
    return cells


def seen(cells: list[Cell]) -> tuple[tuple[bool, float | None], ...]:
    """What a reader learns of each cell: withheld, or its value."""
    return tuple((c.suppressed, None if c.suppressed else c.value) for c in cells)


def publish_months(months: list[tuple[int, ...]], k: int, kind: Kind) -> list[Cell]:
    done = [suppress_month(month(f"2026-0{i + 1}", m, kind), k) for i, m in enumerate(months)]
    out = [c for d in done for c in d]
    if len(done) > 1:
        out += range_rows(done, "range")
    return out


def assert_nothing_derivable(truth: list[tuple[int, ...]], k: int, kind: Kind,
                             bound: int) -> None:
    cells = publish_months(truth, k, kind)
    shown = seen(cells)
    width = len(truth[0])
    # Every population (within the bound, which only helps a reader) giving the same page:
    # the true values each of them puts in the cells.
    alternatives = []
    for values in itertools.product(range(bound + 1), repeat=width * len(truth)):
        candidate = [tuple(values[i:i + width]) for i in range(0, len(values), width)]
        out = publish_months(candidate, k, kind)
        if seen(out) == shown:
            alternatives.append([c.value for c in out])
    assert [c.value for c in cells] in alternatives
    for index, c in enumerate(cells):
        if c.suppressed:
            possible = {alt[index] for alt in alternatives}
            assert len(possible) >= 2, f"{c} derivable from what is shown"


people = st.integers(min_value=0, max_value=9)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=3, max_value=4),
       st.lists(st.sampled_from(UNITS[:3]), min_size=0, max_size=14))
# Found by this test against an earlier method (withhold the smallest cells until two add up to
# k): 3 + 3 withheld beside a shown 4 and total 10 could only be 3 and 3 when k = 4.
@example(4, ["A"] * 4 + ["B"] * 3 + ["C"] * 3)
def test_one_month_by_unit(k: int, population: list[str]) -> None:
    """People drawn into three units; the page shows the month's total and its units."""
    tally = Counter(population)
    counts = tuple(min(tally[u], 2 * k) for u in UNITS[:3])
    assert_nothing_derivable([counts], k, Kind.people, bound=2 * k + 1)


@settings(max_examples=12, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(0, 5)), min_size=2, max_size=2))
def test_months_and_their_range(months: list[tuple[int, int]]) -> None:
    """Escalations by unit over two months, and the range's sums (k = 3)."""
    assert_nothing_derivable(months, 3, Kind.events, bound=5)


@settings(max_examples=200, deadline=None)
@given(st.integers(3, 15), st.integers(0, 40), st.integers(0, 40))
def test_a_share_hides_small_numerators_and_complements(k: int, n: int, m: int) -> None:
    m = min(m, n)
    c = Cell("2026-03", "wellbeing", "share_improved", m / n if n else None, Kind.share, n=n, m=m)
    hidden = primary(c, k)
    if not hidden:
        assert n >= k and (m == 0 or m >= k) and (n - m == 0 or n - m >= k)
