"""The monthly program page as leadership sees it: rendered by headless Chromium (Debian's
/usr/bin/chromium, driven by Playwright; no browser download), charts present, suppression
holding on the page, nothing fetched from another host; and `peerlink report` writes it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings, get_settings
from app.models.common import Role
from tests.factories import Factory
from tests.test_reports_figures import Program, at, build

CHROMIUM = "/usr/bin/chromium"


def page_html(client: TestClient, factory: Factory, p: Program) -> str:
    r = client.get("/v1/reports/program.html",
                   params={"facility": p.facility.code, "month": "2026-03"},
                   headers=factory.headers(factory.user(Role.coordinator, [p.facility])))
    assert r.status_code == 200
    return r.text


@pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium (.ci/run "
                                                         "installs it)")
def test_the_page_in_a_browser(client: TestClient, factory: Factory, tmp_path: Path) -> None:
    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    p = build(factory)
    # Unit A: 12 people supported (shown); unit B: 3 (suppressed, and A with it).
    people = [factory.recipient(p.facility, housing_unit_id=p.a.id) for _ in range(12)]
    people += [factory.recipient(p.facility, housing_unit_id=p.b.id) for _ in range(3)]
    p.session(at(25), attendees=[(x, "attended", None, None) for x in people])
    html = page_html(client, factory, p)
    requests: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.on("request", lambda r: requests.append(r.url))
            tab.set_content(html, wait_until="load")
            charts = tab.locator("svg.chart")
            assert charts.count() >= 3
            assert all(charts.nth(i).bounding_box()["height"] > 0 for i in range(charts.count()))
            labels = tab.locator("figure figcaption").all_inner_texts()
            assert any(x.startswith("People supported by unit") for x in labels)
            chart = tab.locator("figure", has_text="People supported by unit")
            # A (17 people) goes with B (6): the total shows, neither unit does.
            assert chart.inner_text().split("\n")[1:] == ["A", "suppressed", "B", "suppressed"]
            # The month's total (15 + r0..r7 = 23) is shown; the escalations (6) are not.
            reach = tab.locator("section#reach").inner_text()
            assert "People supported\tincarcerated\t2026-03\t23" in reach
            crisis = tab.locator("section#crisis").inner_text()
            assert "Escalations\tincarcerated\t2026-03\tsuppressed" in crisis
            pdf = tab.pdf(format="A4")
            assert pdf[:4] == b"%PDF"
        finally:
            browser.close()
    assert requests == [], f"the page fetched {requests}"


def test_peerlink_report_writes_the_page(factory: Factory, settings: Settings, tmp_path: Path,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from app.cli import app as cli

    p = build(factory)
    out = tmp_path / "march.html"
    monkeypatch.setenv("PEERLINK_DATABASE_URL", settings.database_url)
    get_settings.cache_clear()
    try:
        r = CliRunner().invoke(cli, ["report", "--facility", p.facility.code, "--month",
                                     "2026-03", "--out", str(out)])
        bad = CliRunner().invoke(cli, ["report", "--facility", "NOPE", "--month", "2026-03",
                                       "--out", str(tmp_path / "x.html")])
    finally:
        get_settings.cache_clear()
    assert r.exit_code == 0, r.output
    page = out.read_text()
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert f"{p.facility.code}, 2026-03" in page
    assert bad.exit_code == 2 and "not_found" in bad.output
