"""A report as CSV (spreadsheet formulas neutralised) or as one self-contained HTML page for
leadership: server-side SVG charts, inline CSS with print rules, nothing from another host."""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from html import escape

from app.reports.service import Figure, ProgramReport

COLUMNS = ("facility", "network", "period", "section", "figure", "breakdown", "key", "value",
           "n", "suppressed")
_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value: object) -> str:
    """A CSV cell a spreadsheet will not run: text starting like a formula gets a leading '."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    if isinstance(value, (int, float)):
        return text  # a number, even negative, is a number
    return "'" + text if text.startswith(_FORMULA) else text


def to_csv(report: ProgramReport) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(COLUMNS)
    for f in report.figures:
        w.writerow([cell(getattr(f, c)) for c in COLUMNS])
    return buf.getvalue()


# --- HTML ------------------------------------------------------------------------------------

LABELS = {
    "people_referred": "People referred", "people_supported": "People supported",
    "active_pairings": "Active pairings", "groups_held": "Groups held",
    "attendance_rate": "Group attendance rate", "days_to_first_session_median":
    "Days from referral to first session (median)", "days_to_first_session_p90":
    "Days from referral to first session (90th percentile)", "sessions_held": "Sessions held",
    "supporter_hours": "Supporter hours", "mean_change": "Wellbeing change (mean, after - before)",
    "share_improved": "Share who improved", "escalations": "Escalations",
    "escalations_per_100": "Escalations per 100 people", "breach_rate": "Breach rate",
    "observation_cadence_met": "Staff observation cadence met",
    "ack_minutes_median": "Minutes to acknowledge (median)",
    "ack_minutes_p90": "Minutes to acknowledge (90th percentile)", "enrolled": "Enrolled",
    "completed": "Completed a course", "certified": "Certified supporters",
    "expiring": "Certificates expiring", "lapsed": "Certificates lapsed",
    "pairings_ended_keep_apart": "Pairings ended for a keep-apart",
    "sessions_by_topic": "Sessions by topic",
}
SECTIONS = (("reach", "Reach"), ("timeliness", "Timeliness"), ("sessions", "Sessions"),
            ("wellbeing", "Wellbeing"), ("crisis", "Crisis"), ("training", "Training"),
            ("safety", "Safety"))
SHARES = {"attendance_rate", "share_improved", "breach_rate", "observation_cadence_met"}
SUPPRESSED = "suppressed"

_CSS = """
:root { --ink: #1b2430; --muted: #5b6675; --bar: #2f6f9f; --hidden: #b8c0cc; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--ink);
       margin: 2rem auto; max-width: 60rem; padding: 0 1rem; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 1.6rem;
     border-bottom: 2px solid var(--ink); padding-bottom: .2rem; }
p.meta, p.note { color: var(--muted); margin: .2rem 0; }
table { border-collapse: collapse; width: 100%; margin: .4rem 0 .8rem; }
th, td { text-align: left; padding: .25rem .5rem; border-bottom: 1px solid #dde2e8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.suppressed { color: var(--muted); font-style: italic; text-align: right; }
figure { margin: .6rem 0 1rem; break-inside: avoid; } figcaption { font-weight: 600; }
svg text { font: 12px system-ui, sans-serif; fill: var(--ink); }
svg .bar { fill: var(--bar); } svg .hidden { fill: var(--hidden); }
section { break-inside: avoid-page; }
@media print {
  body { margin: 0; max-width: none; font-size: 11pt; }
  h2 { break-after: avoid; } table, figure { break-inside: avoid; }
  @page { size: A4; margin: 15mm; }
}
"""


def _fmt(f: Figure) -> str:
    if f.suppressed:
        return SUPPRESSED
    if f.value is None:
        return "-"
    if f.figure in SHARES:
        return f"{f.value * 100:.0f}%"
    v = f.value
    return f"{int(v):,}" if float(v).is_integer() else f"{v:,.1f}"


def bar_chart(title: str, rows: list[Figure]) -> str:
    """Horizontal bars, one per key; a suppressed bar is drawn as an empty grey outline with the
    word, never at its length."""
    height = 24 * len(rows) + 8
    top = max([f.value or 0 for f in rows if not f.suppressed] + [1])
    parts = [f'<figure><figcaption>{escape(title)}</figcaption>'
             f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
             f'aria-label="{escape(title)}" width="640" height="{height}" '
             f'viewBox="0 0 640 {height}">']
    for i, f in enumerate(rows):
        y = 4 + 24 * i
        parts.append(f'<text x="0" y="{y + 15}">{escape(f.key or "total")}</text>')
        if f.suppressed:
            parts.append(f'<rect class="hidden" x="160" y="{y}" width="40" height="18" '
                         f'fill-opacity="0.35"/><text x="208" y="{y + 15}">{SUPPRESSED}</text>')
            continue
        w = 0 if not f.value else max(1, round(400 * f.value / top))
        parts.append(f'<rect class="bar" x="160" y="{y}" width="{w}" height="18"/>'
                     f'<text x="{168 + w}" y="{y + 15}">{escape(_fmt(f))}</text>')
    parts.append("</svg></figure>")
    return "".join(parts)


def to_html(report: ProgramReport, *, title: str | None = None) -> str:
    by_section: dict[str, list[Figure]] = defaultdict(list)
    for f in report.figures:
        by_section[f.section].append(f)
    place = ", ".join(report.facilities)
    period = report.start if report.start == report.end else f"{report.start} to {report.end}"
    head = title or f"Peer support program report: {place}, {period}"
    body = [f"<h1>{escape(head)}</h1>",
            f'<p class="meta">Networks: {escape(", ".join(report.networks))}. Figures by month '
            f"in each facility's timezone; no names, ids or dates.</p>",
            f'<p class="note">A count of fewer than {report.min_cell} people, and a rate or '
            f"average over fewer, is shown as <em>{SUPPRESSED}</em>; so is any cell that would "
            f"let one be worked out from the others.</p>"]
    for key, name in SECTIONS:
        figs = by_section.get(key)
        if not figs:
            continue
        body.append(f'<section id="{key}"><h2>{escape(name)}</h2>')
        totals = [f for f in figs if f.breakdown is None]
        if totals:
            body.append("<table><thead><tr><th>Figure</th><th>Network</th><th>Period</th>"
                        "<th>Value</th><th>n</th></tr></thead><tbody>")
            for f in totals:
                cls = "suppressed" if f.suppressed else "num"
                body.append(
                    f"<tr><td>{escape(LABELS.get(f.figure, f.figure))}</td>"
                    f"<td>{escape(f.network)}</td><td>{escape(f.period)}</td>"
                    f'<td class="{cls}">{escape(_fmt(f))}</td>'
                    f'<td class="num">{"" if f.n is None else f.n}</td></tr>')
            body.append("</tbody></table>")
        charts: dict[tuple[str, str, str, str], list[Figure]] = defaultdict(list)
        for f in figs:
            if f.breakdown is not None:
                charts[(f.network, f.period, f.figure, f.breakdown)].append(f)
        for (net, per, fig, breakdown), rows in charts.items():
            label = f"{LABELS.get(fig, fig)} by {breakdown} ({net}, {per})"
            body.append(bar_chart(label, rows))
        body.append("</section>")
    return ("<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{escape(head)}</title>"
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
