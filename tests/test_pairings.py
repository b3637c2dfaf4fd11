"""Pairings: each eligibility rule refused on its own with its code, the transition table in
full, the keep-apart never leaking to a peer, the caseload race, cascades, views, candidates."""

import asyncio
import uuid
from datetime import UTC, datetime

import httpx
import pytest

from app.models import KeepApartOrder, Pairing, PairingTransition
from app.models.common import Role
from app.services.pairings import PAIRING_FLOW


@pytest.fixture()
def ctx(factory):
    f = factory.facility("CCJ", settings={"caseload_cap": 2, "ack_minutes": {}})
    g = factory.facility("NCF")
    coord = factory.user(Role.coordinator, [f, g])
    return {"f": f, "g": g, "coord": coord, "h": factory.headers(coord),
            "sup": factory.certified_supporter(f, languages=["es"]),
            "rec": factory.recipient(f, languages=["es", "en"])}


def _propose(client, h, sup, rec, **kw):
    return client.post("/v1/pairings", headers=h, json={
        "supporter_id": str(sup.id), "recipient_id": str(rec.id), **kw})


def test_propose_activate_pause_resume_end(client, factory, ctx):
    r = _propose(client, ctx["h"], ctx["sup"], ctx["rec"])
    assert r.status_code == 201, r.text
    pid = r.json()["id"]
    for action, body, status in (("activate", {}, "active"), ("pause", {"reason": "leave"}, "paused"),
                                 ("resume", {}, "active"), ("end", {"reason": "completed"}, "ended")):
        r = client.post(f"/v1/pairings/{pid}/{action}", headers=ctx["h"], json=body)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == status
    body = r.json()
    assert body["end_reason"] == "completed" and body["activated_at"] and body["ended_at"]
    assert [e.type for e in factory.events() if e.entity_type == "pairing"] == [
        "pairing.proposed", "pairing.activated", "pairing.paused", "pairing.resumed",
        "pairing.ended"]
    assert factory.count(PairingTransition,
                         PairingTransition.pairing_id == uuid.UUID(body["id"])) == 5
    # Ended is terminal.
    r = client.post(f"/v1/pairings/{pid}/resume", headers=ctx["h"], json={})
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"


@pytest.mark.parametrize("state", ["proposed", "active", "paused", "ended"])
@pytest.mark.parametrize("action", ["activate", "pause", "resume", "end"])
def test_transition_table_in_full(client, factory, ctx, state, action):
    p = factory.pairing(ctx["sup"], ctx["rec"], status=state)
    body = {"reason": "completed"} if action == "end" else {}
    r = client.post(f"/v1/pairings/{p.id}/{action}", headers=ctx["h"], json=body)
    t = PAIRING_FLOW[action]
    if state in t.sources:
        assert r.status_code == 200, r.text
        assert r.json()["status"] == t.target
    else:
        assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
        assert factory.get(Pairing, p.id).status == state


RULES = {
    "self_pairing": lambda f, c: (c["sup"], c["sup"]),
    "not_a_supporter": lambda f, c: (f.participant(c["f"], supporter_availability="active"),
                                     c["rec"]),
    "not_a_recipient": lambda f, c: (c["sup"], f.participant(c["f"])),
    "different_facility": lambda f, c: (c["sup"], f.recipient(c["g"])),
    "not_in_custody": lambda f, c: (c["sup"], f.recipient(c["f"], custody_status="released")),
    "supporter_unavailable": lambda f, c: (
        f.certified_supporter(c["f"], supporter_availability="unavailable"), c["rec"]),
    "supporter_not_certified": lambda f, c: (
        f.participant(c["f"], is_supporter=True, supporter_availability="active"), c["rec"]),
}


@pytest.mark.parametrize("code", sorted(RULES))
def test_each_rule_refused_on_its_own(client, factory, ctx, code):
    pair = RULES[code](factory, ctx)
    r = _propose(client, ctx["h"], *pair)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == code
    assert factory.count(Pairing) == 0


def test_keep_apart_told_to_coordinator_never_to_a_peer(client, factory, ctx):
    factory.keep_apart(ctx["sup"], ctx["rec"])
    r = _propose(client, ctx["h"], ctx["sup"], ctx["rec"])
    assert r.status_code == 422 and r.json()["code"] == "keep_apart"
    cands = client.get("/v1/pairings/candidates", headers=ctx["h"],
                       params={"recipient_id": str(ctx["rec"].id)}).json()
    assert cands["eligible"] == []
    assert [x["code"] for x in cands["ineligible"][0]["refusals"]] == ["keep_apart"]
    # A peer supporter's view of their pairings never mentions it.
    p = factory.pairing(ctx["sup"], factory.recipient(ctx["f"]))
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=ctx["sup"]))
    listed = client.get("/v1/pairings", headers=peer)
    assert listed.status_code == 200 and "keep" not in listed.text.lower()
    assert [x["id"] for x in listed.json()["items"]] == [str(p.id)]


def test_caseload_cap_and_one_active_pairing(client, factory, ctx):
    for _ in range(2):
        factory.pairing(ctx["sup"], factory.recipient(ctx["f"]))
    r = _propose(client, ctx["h"], ctx["sup"], ctx["rec"])
    assert r.status_code == 409 and r.json()["code"] == "caseload_full"
    other = factory.certified_supporter(ctx["f"])
    factory.pairing(other, ctx["rec"])
    second = factory.certified_supporter(ctx["f"])
    r = _propose(client, ctx["h"], second, ctx["rec"])
    assert r.status_code == 409 and r.json()["code"] == "recipient_already_paired"
    r = _propose(client, ctx["h"], second, ctx["rec"],
                 override_reason="Recipient asked for a second Spanish-speaking listener")
    assert r.status_code == 201
    assert factory.audits("pairing.override_one_active")


def test_race_for_the_last_caseload_slot(app, factory, ctx):
    factory.pairing(ctx["sup"], factory.recipient(ctx["f"]))  # one slot of two left
    recipients = [factory.recipient(ctx["f"]) for _ in range(2)]
    props = [factory.pairing(ctx["sup"], rec, status="proposed") for rec in recipients]
    h2 = factory.headers(factory.user(Role.coordinator, [ctx["f"]]))

    async def race() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(
                    c.post(f"/v1/pairings/{props[0].id}/activate", headers=ctx["h"], json={}),
                    c.post(f"/v1/pairings/{props[1].id}/activate", headers=h2, json={}))
        return sorted(r.status_code for r in rs)

    assert asyncio.run(race()) == [200, 409]
    assert factory.count(Pairing, Pairing.status == "active") == 2


def test_release_transfer_and_keep_apart_cascades(client, factory, ctx):
    p1 = factory.pairing(ctx["sup"], ctx["rec"])
    r = client.patch(f"/v1/participants/{ctx['rec'].id}", headers=ctx["h"],
                     json={"custody_status": "released"})
    assert r.status_code == 200
    ended = factory.get(Pairing, p1.id)
    assert ended.status == "ended" and ended.end_reason == "released"
    rec2 = factory.recipient(ctx["f"])
    p2 = factory.pairing(ctx["sup"], rec2)
    assert client.patch(f"/v1/participants/{rec2.id}", headers=ctx["h"],
                        json={"facility_code": "NCF"}).status_code == 200
    assert factory.get(Pairing, p2.id).end_reason == "transferred"
    rec3 = factory.recipient(ctx["f"])
    p3 = factory.pairing(ctx["sup"], rec3)
    r = client.post("/v1/keep-apart-orders", headers=ctx["h"], json={
        "participant_ids": [str(ctx["sup"].id), str(rec3.id)], "reason": "threat",
        "scope": "unit", "authorised_by": "Lt. Diaz"})
    assert r.status_code == 201
    assert factory.get(Pairing, p3.id).end_reason == "keep_apart"
    ended_events = factory.events("pairing.ended")
    assert len(ended_events) == 3 and factory.count(KeepApartOrder) == 1


def test_unavailable_supporter_has_active_pairings_paused(client, factory, ctx):
    p = factory.pairing(ctx["sup"], ctx["rec"])
    r = client.patch(f"/v1/participants/{ctx['sup'].id}", headers=ctx["h"],
                     json={"supporter_availability": "unavailable"})
    assert r.status_code == 200
    paused = factory.get(Pairing, p.id)
    assert paused.status == "paused" and paused.pause_reason == "supporter_unavailable"
    r = client.post(f"/v1/pairings/{p.id}/resume", headers=ctx["h"], json={})
    assert r.status_code == 422 and r.json()["code"] == "supporter_unavailable"


def test_peer_view_shows_only_preferred_name_and_unit(client, factory, ctx):
    unit = factory.unit(ctx["f"], "A1")
    rec = factory.recipient(ctx["f"], preferred_name="Rob", legal_name="Robert Secret",
                            housing_unit_id=unit.id)
    p = factory.pairing(ctx["sup"], rec)
    factory.pairing(factory.certified_supporter(ctx["f"]), factory.recipient(ctx["f"]))
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=ctx["sup"]))
    r = client.get(f"/v1/pairings/{p.id}", headers=peer)
    assert r.status_code == 200
    assert r.json()["recipient"] == {"preferred_name": "Rob", "housing_unit_id": str(unit.id)}
    assert "Secret" not in r.text
    assert len(client.get("/v1/pairings", headers=peer).json()["items"]) == 1
    assert client.get(f"/v1/participants/{rec.id}", headers=peer).status_code == 404
    assert client.post(f"/v1/pairings/{p.id}/pause", headers=peer, json={}).status_code == 403


def test_candidates_ranked_with_parts(client, factory, ctx):
    unit = factory.unit(ctx["f"], "B2")
    rec = factory.recipient(ctx["f"], languages=["es"], housing_unit_id=unit.id)
    near = factory.certified_supporter(ctx["f"], languages=["es"], housing_unit_id=unit.id)
    far = factory.certified_supporter(ctx["f"], languages=["en"])
    busy = factory.certified_supporter(ctx["f"], languages=["en"])
    factory.pairing(busy, factory.recipient(ctx["f"]))
    factory.participant(ctx["f"], is_supporter=True, supporter_availability="active")  # uncertified
    r = client.get("/v1/pairings/candidates", headers=ctx["h"],
                   params={"recipient_id": str(rec.id)})
    assert r.status_code == 200, r.text
    body = r.json()
    order = [c["supporter_id"] for c in body["eligible"]]
    assert order[0] == str(near.id) and order.index(str(far.id)) < order.index(str(busy.id))
    top = body["eligible"][0]["score"]
    assert top["shared_language"] > 0 and top["same_housing_unit"] > 0
    assert top["total"] == sum(v for k, v in top.items() if k != "total")
    assert {x["refusals"][0]["code"] for x in body["ineligible"]} == {"supporter_not_certified"}


def test_network_rule_holds_even_where_no_caller_can_see_both_networks(factory, ctx):
    """No role sees both networks and may pair, so the API answers 404 first; the rule itself
    still refuses the pair."""
    from app.services.pairings import Facts, refusals

    staff = factory.recipient(ctx["f"], "staff", employment_status="employed")
    found = refusals(Facts(supporter=ctx["sup"], recipient=staff, certified=True,
                           keep_apart=False, caseload=0, cap=5, recipient_holding=0),
                     override=False)
    assert [c for c, _, _ in found] == ["network_mismatch"]


def _sweep(app):
    from app.worker import _jobs, run_job

    job = next(j for j in _jobs() if j.name == "certification_sweep")
    return asyncio.run(run_job(app.state.sessionmaker, app.state.settings, job))


def test_lapsed_certificate_pauses_then_renewal_resumes(app, client, factory, ctx):
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from app.models import ConductSignature, Enrollment

    p = factory.pairing(ctx["sup"], ctx["rec"])
    long_ago = datetime.now(UTC) - timedelta(days=800)
    with factory.engine.begin() as conn:  # the certificate ran out: training 800 days ago
        conn.execute(update(Enrollment).where(Enrollment.participant_id == ctx["sup"].id)
                     .values(completed_at=long_ago))
        conn.execute(update(ConductSignature).where(
            ConductSignature.participant_id == ctx["sup"].id).values(signed_on=long_ago.date()))
    assert _sweep(app) == {"supporters_checked": 1, "paused": 1, "resumed": 0}
    paused = factory.get(Pairing, p.id)
    assert paused.status == "paused" and paused.pause_reason == "certification_lapsed"
    assert len(factory.events("certification.lapsed")) == 1
    assert _sweep(app)["paused"] == 0  # nothing twice
    refresher = factory.course(required=False, refresher=True, hours=8)
    factory.enrollment(ctx["sup"], refresher, status="completed", completed_at=datetime.now(UTC))
    assert _sweep(app)["resumed"] == 1
    assert factory.get(Pairing, p.id).status == "active"
    assert [e.type for e in factory.events()][-1] == "pairing.resumed"


def test_service_runs_the_sweep_itself_when_embedded(settings, factory, ctx):
    """`make run` on the embedded default: the service is its own worker."""
    import time
    from datetime import UTC, datetime, timedelta

    from fastapi.testclient import TestClient
    from sqlalchemy import update

    from app.main import create_app
    from app.models import ConductSignature, Enrollment

    p = factory.pairing(ctx["sup"], ctx["rec"])
    long_ago = datetime.now(UTC) - timedelta(days=800)
    with factory.engine.begin() as conn:
        conn.execute(update(Enrollment).values(completed_at=long_ago))
        conn.execute(update(ConductSignature).values(signed_on=long_ago.date()))
    app = create_app(settings.model_copy(update={"embedded_worker": True}))
    with TestClient(app):
        deadline = time.monotonic() + 5
        while factory.get(Pairing, p.id).status != "paused" and time.monotonic() < deadline:
            time.sleep(0.05)
    assert factory.get(Pairing, p.id).pause_reason == "certification_lapsed"


def test_housing_move_pauses_a_pairing_that_now_conflicts(client, factory, ctx):
    """An order imported behind the service's back (no cascade ran) is caught by the next
    housing move of either person."""
    p = factory.pairing(ctx["sup"], ctx["rec"])
    factory.keep_apart(ctx["sup"], ctx["rec"], scope="unit")
    factory.unit(ctx["f"], "C9")
    r = client.patch(f"/v1/participants/{ctx['rec'].id}", headers=ctx["h"],
                     json={"housing_unit_code": "C9"})
    assert r.status_code == 200
    moved = factory.get(Pairing, p.id)
    assert moved.status == "paused" and moved.pause_reason == "keep_apart"


def test_peer_never_learns_a_pairing_ended_for_a_keep_apart(client, factory, ctx):
    p = factory.pairing(ctx["sup"], ctx["rec"])
    r = client.post("/v1/keep-apart-orders", headers=ctx["h"], json={
        "participant_ids": [str(ctx["sup"].id), str(ctx["rec"].id)], "reason": "gang",
        "scope": "facility", "authorised_by": "Lt. Diaz"})
    assert r.status_code == 201
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=ctx["sup"]))
    for r in (client.get(f"/v1/pairings/{p.id}", headers=peer),
              client.get("/v1/pairings", headers=peer)):
        assert r.status_code == 200 and "keep_apart" not in r.text
    assert client.get(f"/v1/pairings/{p.id}", headers=ctx["h"]).json()["end_reason"] == \
        "keep_apart"


def test_merge_ends_pairings_that_now_face_a_keep_apart(client, factory, ctx):
    dup = factory.recipient(ctx["f"])
    other_sup = factory.certified_supporter(ctx["f"])
    kept = factory.pairing(ctx["sup"], ctx["rec"])
    dup_pairing = factory.pairing(other_sup, dup)
    factory.keep_apart(dup, ctx["sup"])
    r = client.post(f"/v1/participants/{ctx['rec'].id}/merge", headers=ctx["h"],
                    json={"duplicate_id": str(dup.id)})
    assert r.status_code == 200, r.text
    assert factory.get(Pairing, kept.id).end_reason == "keep_apart"
    assert factory.get(Pairing, dup_pairing.id).status == "ended"


def test_leave_pauses_and_archive_ends(client, factory, ctx):
    staff_f = ctx["f"]
    sc = factory.headers(factory.user(Role.staff_coordinator, [staff_f]))
    sup = factory.certified_supporter(staff_f, "staff", employment_status="employed")
    rec = factory.recipient(staff_f, "staff", employment_status="employed")
    p = factory.pairing(sup, rec)
    assert client.patch(f"/v1/participants/{sup.id}", headers=sc,
                        json={"employment_status": "on_leave"}).status_code == 200
    assert factory.get(Pairing, p.id).status == "paused"
    q = factory.pairing(ctx["sup"], ctx["rec"])
    assert client.post(f"/v1/participants/{ctx['rec'].id}/archive",
                       headers=ctx["h"]).status_code == 200
    assert factory.get(Pairing, q.id).status == "ended"


def test_more_rules_through_the_api(client, factory, ctx):
    """The rules the table above cannot reach: archived records, staff not at work, the
    supporter's own lower cap, and every rule again on activate."""
    r = _propose(client, ctx["h"], ctx["sup"], factory.recipient(
        ctx["f"], archived_at=datetime.now(UTC)))
    assert r.status_code == 422 and r.json()["code"] == "archived"
    sc = factory.headers(factory.user(Role.staff_coordinator, [ctx["f"]]))
    staff_sup = factory.certified_supporter(ctx["f"], "staff", employment_status="on_leave")
    staff_rec = factory.recipient(ctx["f"], "staff", employment_status="employed")
    r = _propose(client, sc, staff_sup, staff_rec)
    assert r.status_code == 422 and r.json()["code"] == "not_employed"
    capped = factory.certified_supporter(ctx["f"], caseload_cap=1)
    factory.pairing(capped, factory.recipient(ctx["f"]))
    r = _propose(client, ctx["h"], capped, ctx["rec"])
    assert r.status_code == 409 and r.json()["code"] == "caseload_full"
    # Proposed while fine; by activation a keep-apart stands between them.
    p = factory.pairing(ctx["sup"], ctx["rec"], status="proposed")
    factory.keep_apart(ctx["sup"], ctx["rec"])
    r = client.post(f"/v1/pairings/{p.id}/activate", headers=ctx["h"], json={})
    assert r.status_code == 422 and r.json()["code"] == "keep_apart"
    assert factory.get(Pairing, p.id).status == "proposed"
