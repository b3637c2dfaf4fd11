"""What readers of /v1/reports see: their networks and facilities only, de-identified figures,
small cells suppressed with their complements, CSV that no spreadsheet runs, the HTML page."""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from fastapi.testclient import TestClient

from app.models.common import Role
from tests.factories import Factory
from tests.test_reports_figures import Program, at, build

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def report(client: TestClient, factory: Factory, user: Any, **params: str) -> Any:
    params.setdefault("from", "2026-03")
    r = client.get("/v1/reports/program", params=params, headers=factory.headers(user))
    assert r.status_code == 200, r.text
    return r.json()


def row(body: Any, figure: str, period: str = "2026-03", breakdown: str | None = None,
        key: str | None = None, network: str = "incarcerated") -> Any:
    found = [f for f in body["figures"] if f["figure"] == figure and f["period"] == period
             and f["breakdown"] == breakdown and f["key"] == key and f["network"] == network]
    assert len(found) == 1, (figure, period, breakdown, key, found)
    return found[0]


def test_small_counts_are_suppressed_and_nothing_identifies_anyone(
        client: TestClient, factory: Factory) -> None:
    p = build(factory)
    body = report(client, factory, factory.user(Role.coordinator, [p.facility]))
    assert body["min_cell"] == 11 and body["networks"] == ["incarcerated"]
    supported = row(body, "people_supported")
    assert supported == {**supported, "value": None, "suppressed": True}       # 8 people
    assert row(body, "people_supported", breakdown="unit", key="A")["suppressed"]
    assert row(body, "escalations")["value"] is None                          # 6
    assert row(body, "mean_change")["value"] is None and row(body, "mean_change")["n"] is None
    assert row(body, "ack_minutes_median", breakdown="tier", key="high")["suppressed"]
    # Not counts of people: shown.
    assert row(body, "sessions_held")["value"] == 7
    assert row(body, "supporter_hours")["value"] == 7.5
    assert row(body, "sessions_by_topic", breakdown="topic", key="coping")["value"] == 6
    assert row(body, "escalations", breakdown="tier", key="high")["value"] is None
    text = str(body)
    assert not UUID.search(text) and not DATE.search(text)
    assert "Person" not in text


def test_a_small_unit_takes_a_complement_with_it(client: TestClient, factory: Factory) -> None:
    """Unit B's 3 people are suppressed; A's 12 would give them back from the total (15): A is
    suppressed too, the total stays."""
    p = Program(factory)
    people = [factory.recipient(p.facility, housing_unit_id=p.a.id) for _ in range(12)]
    people += [factory.recipient(p.facility, housing_unit_id=p.b.id) for _ in range(3)]
    p.session(at(9), minutes=60, attendees=[(x, "attended", None, None) for x in people])
    body = report(client, factory, factory.user(Role.auditor, [p.facility]),
                  network="incarcerated")
    assert row(body, "people_supported")["value"] == 15
    assert row(body, "people_supported", breakdown="unit", key="B")["suppressed"]
    assert row(body, "people_supported", breakdown="unit", key="A")["suppressed"]
    assert row(body, "people_supported", breakdown="unit", key="A")["value"] is None
    # The group's attendance rate is over 15 people: shown, with its n.
    assert row(body, "attendance_rate") == {**row(body, "attendance_rate"), "value": 1.0,
                                            "n": 15, "suppressed": False}


def test_overlapping_ranges_show_the_same_months(client: TestClient, factory: Factory) -> None:
    p = build(factory)
    user = factory.user(Role.coordinator, [p.facility])
    wide = report(client, factory, user, **{"from": "2026-01", "to": "2026-03"})
    narrow = report(client, factory, user, **{"from": "2026-02", "to": "2026-03"})
    march = [f for f in wide["figures"] if f["period"] == "2026-03"]
    assert march == [f for f in narrow["figures"] if f["period"] == "2026-03"]
    # A range row of an additive figure is the sum of its months, withheld when one is.
    assert row(wide, "sessions_held", "2026-01..2026-03")["value"] == 8
    assert row(wide, "escalations", "2026-01..2026-03")["suppressed"]
    assert not [f for f in wide["figures"] if f["period"] == "2026-01..2026-03"
                and f["figure"] == "people_supported"]


def test_who_reads_which_network(client: TestClient, factory: Factory) -> None:
    p = build(factory)
    other = factory.facility()
    coordinator = factory.user(Role.coordinator, [p.facility])
    staff = factory.user(Role.staff_coordinator, [p.facility])
    auditor = factory.user(Role.auditor, [p.facility])
    assert report(client, factory, staff)["networks"] == ["staff"]
    assert report(client, factory, auditor)["networks"] == ["incarcerated", "staff"]
    for user, params in ((staff, {"network": "incarcerated"}),
                         (coordinator, {"network": "staff"}),
                         (coordinator, {"facility": other.code}),
                         (auditor, {"facility": "NOPE"})):
        r = client.get("/v1/reports/program", params={"from": "2026-03", **params},
                       headers=factory.headers(user))
        assert r.status_code == 404, (user.role, params)
    assert report(client, factory, coordinator)["facilities"] == [p.facility.code]
    for role in (Role.clinician, Role.officer, Role.admin):
        r = client.get("/v1/reports/program", params={"from": "2026-03"},
                       headers=factory.headers(factory.user(role, [p.facility])))
        assert r.status_code == 403


def test_bad_ranges(client: TestClient, factory: Factory) -> None:
    f = factory.facility()
    user = factory.user(Role.coordinator, [f])
    for params, code in (({"from": "2026-03", "to": "2026-02"}, "invalid_range"),
                         ({"from": "2023-01", "to": "2026-02"}, "range_too_long")):
        r = client.get("/v1/reports/program", params=params, headers=factory.headers(user))
        assert r.status_code == 422 and r.json()["code"] == code
    r = client.get("/v1/reports/program", params={"from": "2026-13"},
                   headers=factory.headers(user))
    assert r.status_code == 422


def test_csv_neutralises_formulas(client: TestClient, factory: Factory) -> None:
    p = Program(factory)
    for code in ("=HYPERLINK(1)", "+1", "-1", "@SUM(1)"):
        factory.recipient(p.facility, housing_unit_id=factory.unit(p.facility, code).id)
    r = client.get("/v1/reports/program.csv", params={"from": "2026-03"},
                   headers=factory.headers(factory.user(Role.coordinator, [p.facility])))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    keys = {x["key"] for x in rows if x["breakdown"] == "unit"}
    assert {"'=HYPERLINK(1)", "'+1", "'-1", "'@SUM(1)"} <= keys
    assert not [v for x in rows for v in x.values() if v and (
        v[0] in "=+@" or (v[0] == "-" and not re.fullmatch(r"-\d+(\.\d+)?", v)))]
    held = next(x for x in rows if x["figure"] == "sessions_held")
    assert held["value"] == "0" and held["suppressed"] == "false"


def test_the_html_page_stands_alone(client: TestClient, factory: Factory) -> None:
    p = build(factory)
    r = client.get("/v1/reports/program.html", params={"facility": p.facility.code,
                                                       "month": "2026-03"},
                   headers=factory.headers(factory.user(Role.coordinator, [p.facility])))
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert "<svg" in page and "@media print" in page
    assert not re.search(r"""(src|href)\s*=|@import|url\(""", page)
    assert "default-src 'none'" in r.headers["content-security-policy"]
    assert not UUID.search(page)
