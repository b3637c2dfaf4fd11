"""The reference web app in a real browser: the journeys people make, through the public API
only, with screenshots kept in var/artifacts/browser/."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from app.models import Escalation, Pairing, SupportSession
from app.models.common import Role
from tests.factories import PASSWORD

AXE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()


def sign_in(page, username: str) -> None:  # type: ignore[no-untyped-def]
    page.goto("/app/")
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def no_serious_axe_violation(page) -> None:  # type: ignore[no-untyped-def]
    page.evaluate(AXE)  # through the debugging protocol: the page's CSP stays as it is
    result = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    serious = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
               for v in result["violations"] if v["impact"] in ("serious", "critical")]
    assert serious == [], json.dumps(serious, indent=1)


def test_board_shows_a_new_imminent_escalation_within_2s_then_acknowledge(new_page, factory, client):
    f = factory.facility("CCJ")
    unit = factory.unit(f, "B2")
    clinician = factory.user(Role.clinician, [f])
    supporter = factory.certified_supporter(f, preferred_name="Pat")
    recipient = factory.recipient(f, preferred_name="Robin", housing_unit_id=unit.id)
    factory.pairing(supporter, recipient)
    peer = factory.user(Role.peer_supporter, [f], participant=supporter)

    page = new_page("board")
    sign_in(page, clinician.username)
    page.get_by_role("heading", name="Escalation board").wait_for()
    page.locator("#live-state", has_text="live").wait_for(timeout=10_000)
    no_serious_axe_violation(page)

    r = client.post("/v1/escalations", headers=factory.headers(peer) | {"Idempotency-Key": "b-1"},
                    json={"participant_id": str(recipient.id), "category": "suicide_risk",
                          "tier": "imminent", "description": "Said goodbye to everyone"})
    assert r.status_code == 201, r.text
    raised = time.monotonic()
    card = page.locator('li.esc[data-tier="imminent"]')
    card.wait_for(timeout=2_000)
    shown_after = time.monotonic() - raised
    print(f"\nthe board showed the raise {shown_after:.2f} s after it was answered")
    assert shown_after < 2.0, shown_after
    assert "CCJ B2" in card.inner_text()
    assert ":" in card.locator(".countdown").inner_text()  # the countdown runs

    card.get_by_role("button", name="Acknowledge").click()
    card.locator(".status", has_text="acknowledged").wait_for(timeout=5_000)
    esc = factory.get(Escalation, uuid.UUID(r.json()["id"]))
    assert esc.status == "acknowledged" and esc.acknowledged_by == f"user:{clinician.id}"


def test_a_peer_logs_a_session_in_one_step(new_page, factory):
    f = factory.facility("CCJ")
    supporter = factory.certified_supporter(f, preferred_name="Pat")
    recipient = factory.recipient(f, preferred_name="Robin")
    pairing = factory.pairing(supporter, recipient)
    peer = factory.user(Role.peer_supporter, [f], participant=supporter)

    page = new_page("tablet")
    sign_in(page, peer.username)
    page.get_by_role("heading", name="Peer tablet").wait_for()
    assert "Robin" in page.locator("#my-pairings").inner_text()
    no_serious_axe_violation(page)
    page.get_by_label("Minutes").fill("45")
    page.get_by_label("Wellbeing before (1–5)").select_option("2")
    page.get_by_label("Wellbeing after (1–5)").select_option("4")
    page.get_by_label("Confidential note").fill("Talked about the family visit.")
    page.get_by_role("button", name="Save session").click()
    page.get_by_text("Session with Robin saved.").wait_for(timeout=5_000)

    assert factory.count(SupportSession, SupportSession.pairing_id == pairing.id,
                         SupportSession.status == "completed",
                         SupportSession.duration_minutes == 45) == 1

    # ... and raises an escalation about the person they support, from the same screen.
    page.get_by_label("About").select_option(label="Robin")
    page.get_by_label("Tier").select_option("high")
    page.get_by_label("What you saw").fill("Gave away belongings")
    page.get_by_role("button", name="Raise escalation").click()
    page.get_by_text("Staff have been alerted.").wait_for(timeout=5_000)
    assert factory.count(Escalation, Escalation.participant_id == recipient.id,
                         Escalation.tier == "high") == 1


def test_a_coordinator_pairs_from_the_candidates(new_page, factory):
    f = factory.facility("CCJ")
    coordinator = factory.user(Role.coordinator, [f])
    factory.certified_supporter(f, preferred_name="Sky", languages=["en"])
    recipient = factory.recipient(f, legal_name="Jordan Lee", preferred_name="Jordan",
                                  languages=["en"])

    page = new_page("desk")
    sign_in(page, coordinator.username)
    page.get_by_role("heading", name="Coordinator's desk").wait_for()
    page.locator("#report", has_text="are suppressed").wait_for(timeout=5_000)  # the report read
    page.get_by_label("Name or identifier").fill("Jordan")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("button", name="Open Jordan").click()
    candidates = page.locator("#candidates")
    candidates.get_by_text("Sky").wait_for(timeout=5_000)
    assert "shares a language" in candidates.inner_text()
    no_serious_axe_violation(page)
    page.get_by_role("button", name="Propose and activate: Sky").click()
    page.get_by_text("Pairing with Sky is active.").wait_for(timeout=5_000)

    assert factory.count(Pairing, Pairing.recipient_id == recipient.id) == 1
    assert factory.count(Pairing, Pairing.recipient_id == recipient.id,
                         Pairing.status == "active") == 1


def test_the_app_loads_nothing_from_another_host(client):
    r = client.get("/app/")
    assert r.status_code == 200
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp
    assert "http" not in csp and "unsafe-inline" not in csp
    for asset in ("/app/app.js", "/app/vendor/peerlink-client.js", "/app/styles.css"):
        body = client.get(asset).text
        assert "https://" not in body.replace("https://peerlink.example", ""), asset
