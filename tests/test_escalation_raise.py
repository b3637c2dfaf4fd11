"""Anyone who sees a risk raises it, about a person their role cannot otherwise see (by our id,
a booking number or another system's id) or only a place, and learns nothing more than they gave.

- A raise that does not name a person the raiser can see is *blind*: the escalation is recorded
  against the person the server finds (across every wall, never told), else only the place; the
  raiser's answer, then and later, is a receipt (id, status, raised_at, deadline, what they
  sent), identical in shape whether the lookup found someone, someone they cannot see, or
  nobody. They may add observations to it; working it is for the people of the place.
- The place is bounded by the raiser's facilities (422 `unknown_facility`); a unit must be of it.
- A coordinator or clinician links the subject later; the facility and network follow the person.
- A subjectless escalation keeps the deadline and tier rules, sits behind the walls, and blocks
  nothing it cannot name.
"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.models import Escalation
from app.models.common import Role
from app.services.escalations import breach_sweep

RECEIPT = {"view", "id", "status", "raised_at", "ack_deadline", "category", "reported"}


@pytest.fixture()
def w(factory: Any) -> dict[str, Any]:
    """Facility A (the raisers') and B; a peer with a recipient; people on each side."""
    a, b = factory.facility(), factory.facility()
    sup = factory.certified_supporter(a)
    mine = factory.recipient(a)
    factory.pairing(sup, mine)
    users = {
        "peer": factory.user(Role.peer_supporter, [a], participant=sup),
        "officer": factory.user(Role.officer, [a]),
        "coord": factory.user(Role.coordinator, [a]),
        "staff_coord": factory.user(Role.staff_coordinator, [a]),
        "clin": factory.user(Role.clinician, [a]),
        "clin_ab": factory.user(Role.clinician, [a, b]),
        "coord_all": factory.user(Role.coordinator),
    }
    return {"a": a, "b": b, "sup": sup, "mine": mine, "users": users,
            "h": {k: factory.headers(u) for k, u in users.items()},
            "unit_a": factory.unit(a), "unit_b": factory.unit(b)}


def _raise(client: Any, h: dict[str, str], **body: Any) -> Any:
    body = {"category": "violence_threat", "description": "Said he would stab him at chow",
            "tier": "high"} | body
    return client.post("/v1/escalations", json=body,
                       headers=h | {"Idempotency-Key": str(uuid.uuid4())})


def _stored(factory: Any, r: Any) -> Escalation:
    return factory.get(Escalation, uuid.UUID(r.json()["id"]))


def _comparable(receipt: dict[str, Any]) -> dict[str, Any]:
    """A receipt without what differs between any two raises (id, times, the identifier)."""
    out = {k: v for k, v in receipt.items() if k not in {"id", "raised_at", "ack_deadline"}}
    out["reported"] = {k: v for k, v in receipt["reported"].items()
                       if k not in {"participant_id", "external_id"}}
    out["deadline_minutes"] = round((datetime.fromisoformat(receipt["ack_deadline"])
                                     - datetime.fromisoformat(receipt["raised_at"])
                                     ).total_seconds() / 60)
    return out


# --- the existing path --------------------------------------------------------------------------

def test_raising_about_a_person_one_can_see_is_unchanged(client, factory, w):
    officer = _raise(client, w["h"]["officer"], participant_id=str(w["mine"].id))
    assert officer.status_code == 201 and officer.json()["participant_id"] == str(w["mine"].id)
    assert officer.json()["description"] is None and "ETag" in officer.headers
    peer = _raise(client, w["h"]["peer"], participant_id=str(w["mine"].id))
    assert peer.status_code == 201 and set(peer.json()) == {"view", "id", "status", "raised_at"}
    assert _stored(factory, peer).raised_blind is False


# --- blind raises -------------------------------------------------------------------------------

def test_a_peer_raises_about_someone_who_is_not_their_recipient(client, factory, w):
    other = factory.recipient(w["a"])
    r = _raise(client, w["h"]["peer"], participant_id=str(other.id))
    assert r.status_code == 201, r.text
    assert set(r.json()) == RECEIPT and "ETag" not in r.headers
    assert r.json()["reported"] == {"participant_id": str(other.id), "external_id": None,
                                    "facility_id": None, "location_unit_id": None,
                                    "location_text": None}
    assert r.headers["Location"] == f"/v1/escalations/{r.json()['id']}"
    esc = _stored(factory, r)
    assert (esc.participant_id, esc.facility_id, esc.network) == (other.id, w["a"].id,
                                                                   "incarcerated")
    assert esc.location_unit_id == other.housing_unit_id
    # the people who work it see whom it is about
    seen = client.get(f"/v1/escalations/{esc.id}", headers=w["h"]["clin"]).json()
    assert seen["participant_id"] == str(other.id)
    assert seen["description"] == "Said he would stab him at chow"
    # the raiser: the receipt, now and later, in the list too
    again = client.get(f"/v1/escalations/{esc.id}", headers=w["h"]["peer"])
    assert again.json() == r.json() and "ETag" not in again.headers
    listed = client.get("/v1/escalations", headers=w["h"]["peer"]).json()["items"]
    assert [x for x in listed if x["id"] == str(esc.id)] == [r.json()]


@pytest.mark.parametrize("raiser", ["peer", "officer", "coord"])
def test_no_existence_oracle(client, factory, w, raiser):
    """Someone the raiser cannot see (elsewhere, or of the other network) and nobody at all:
    the same answer, the same later reads, the same refusals."""
    h = w["h"][raiser]
    elsewhere = factory.recipient(w["b"], external=("booking", f"B-{uuid.uuid4().hex[:6]}"))
    staff = factory.participant(w["a"], "staff", external=("hr", f"E-{uuid.uuid4().hex[:6]}"))
    place = {"facility_id": str(w["a"].id), "location_text": "Cell 12"}
    answers = [
        _raise(client, h, participant_id=str(elsewhere.id), **place),
        _raise(client, h, participant_id=str(staff.id), **place),
        _raise(client, h, participant_id=str(uuid.uuid4()), **place),
        _raise(client, h, external_id=elsewhere.external_ids[0], **place),
        _raise(client, h, external_id=staff.external_ids[0], **place),
        _raise(client, h, external_id={"source": "booking", "value": "NOBODY-1"}, **place),
    ]
    assert {r.status_code for r in answers} == {201}
    assert all(set(r.json()) == RECEIPT for r in answers)
    assert all(set(r.headers) >= {"location"} and "etag" not in r.headers for r in answers)
    assert len({repr(_comparable(r.json())) for r in answers}) == 1
    for r in answers:
        eid = r.json()["id"]
        single = client.get(f"/v1/escalations/{eid}", headers=h)
        assert single.status_code == 200 and single.json() == r.json()
        assert client.get(f"/v1/escalations/{eid}/watch", headers=h).status_code == 404
        obs = client.post(f"/v1/escalations/{eid}/observations", headers=h, json={
            "observed_at": datetime.now(UTC).isoformat(), "seen": "Pacing"})
        assert obs.status_code == 201
    listed = {x["id"]: x for x in client.get("/v1/escalations?limit=200",
                                             headers=h).json()["items"]}
    assert all(listed[r.json()["id"]] == r.json() for r in answers)
    # recorded against the person when found, else only the place
    stored = [_stored(factory, r) for r in answers]
    assert [e.participant_id for e in stored] == [elsewhere.id, staff.id, None,
                                                  elsewhere.id, staff.id, None]
    assert {e.facility_id for e in stored} == {w["a"].id}  # where it was seen
    assert [e.network for e in stored] == ["incarcerated", "staff", "incarcerated",
                                           "incarcerated", "staff", "incarcerated"]
    assert all(e.raised_blind for e in stored)


def test_a_blind_raiser_cannot_work_it_whatever_the_lookup_found(client, factory, w):
    staff = factory.participant(w["a"], "staff", external=("hr", "E-77"))
    found = _raise(client, w["h"]["coord"], external_id={"source": "hr", "value": "E-77"},
                   facility_id=str(w["a"].id)).json()["id"]
    nobody = _raise(client, w["h"]["coord"], external_id={"source": "hr", "value": "E-78"},
                    facility_id=str(w["a"].id)).json()["id"]
    for eid in (found, nobody):
        for path, body in (("acknowledge", {}), ("tier", {"tier": "imminent", "reason": "x"}),
                           ("subject", {"participant_id": str(w["mine"].id)})):
            r = client.post(f"/v1/escalations/{eid}/{path}", headers=w["h"]["coord"], json=body)
            assert r.status_code == 404, (path, r.text)
        assert client.get(f"/v1/escalations/{eid}/timeline",
                          headers=w["h"]["coord"]).status_code == 404
    # the people of the place work it: the staff network's own for the staff member
    assert client.post(f"/v1/escalations/{found}/acknowledge", headers=w["h"]["staff_coord"],
                       json={}).status_code == 200
    assert client.get(f"/v1/escalations/{found}", headers=w["h"]["staff_coord"]).json()[
        "participant_id"] == str(staff.id)
    assert client.post(f"/v1/escalations/{nobody}/acknowledge", headers=w["h"]["clin"],
                       json={}).status_code == 200
    assert client.get(f"/v1/escalations/{found}", headers=w["h"]["coord"]).json()["status"] == (
        "acknowledged")  # still the receipt, with the status


def test_a_visible_booking_number_is_a_raise_about_that_person(client, factory, w):
    person = factory.recipient(w["a"], external=("booking", "B-100"))
    r = _raise(client, w["h"]["officer"], external_id={"source": "booking", "value": "B-100"})
    assert r.status_code == 201 and r.json()["participant_id"] == str(person.id)
    assert r.json()["reported"]["external_id"] == {"source": "booking", "value": "B-100"}
    assert _stored(factory, r).raised_blind is False


def test_a_merged_record_leads_to_the_survivor(client, factory, w):
    survivor = factory.recipient(w["b"])
    dup = factory.recipient(w["b"], merged_into_id=survivor.id,
                            archived_at=datetime.now(UTC))
    r = _raise(client, w["h"]["officer"], participant_id=str(dup.id))
    assert r.status_code == 201 and _stored(factory, r).participant_id == survivor.id


# --- the place ----------------------------------------------------------------------------------

def test_a_raise_about_a_place(client, factory, w):
    r = _raise(client, w["h"]["officer"], facility_id=str(w["a"].id),
               location_unit_id=str(w["unit_a"].id), location_text="Cell 12, top bunk",
               tier=None, screener={"wish_to_be_dead": True, "suicidal_thoughts": True,
                                    "thoughts_with_method": True, "intent": True, "plan": False,
                                    "behavior": False})
    assert r.status_code == 201, r.text
    assert r.json()["reported"] == {"participant_id": None, "external_id": None,
                                    "facility_id": str(w["a"].id),
                                    "location_unit_id": str(w["unit_a"].id),
                                    "location_text": "Cell 12, top bunk"}
    esc = _stored(factory, r)
    assert esc.participant_id is None and esc.tier == "high"  # triage as today
    assert 14.9 < (esc.ack_deadline - esc.raised_at).total_seconds() / 60 < 15.1
    assert (esc.facility_id, esc.location_unit_id, esc.network) == (
        w["a"].id, w["unit_a"].id, "incarcerated")
    board = client.get("/v1/escalations?status=open&sort=deadline",
                       headers=w["h"]["clin"]).json()["items"]
    assert [x["participant_id"] for x in board if x["id"] == str(esc.id)] == [None]


def test_a_raiser_of_one_facility_need_not_name_it(client, factory, w):
    r = _raise(client, w["h"]["peer"], location_text="Yard, by the fence")
    assert r.status_code == 201 and _stored(factory, r).facility_id == w["a"].id
    r = _raise(client, w["h"]["officer"], location_unit_id=str(w["unit_a"].id))
    assert r.status_code == 201 and _stored(factory, r).facility_id == w["a"].id


@pytest.mark.parametrize("raiser,network", [("officer", "incarcerated"), ("clin", "incarcerated"),
                                            ("staff_coord", "staff")])
def test_a_place_takes_the_raisers_network(client, factory, w, raiser, network):
    r = _raise(client, w["h"][raiser], facility_id=str(w["a"].id))
    assert r.status_code == 201 and _stored(factory, r).network == network


def test_a_staff_peer_raises_in_the_staff_network(client, factory, w):
    staff_sup = factory.certified_supporter(w["a"], "staff")
    h = factory.headers(factory.user(Role.peer_supporter, [w["a"]], participant=staff_sup))
    assert _stored(factory, _raise(client, h, location_text="Break room")).network == "staff"


def test_the_place_is_bounded_by_the_raisers_facilities(client, factory, w):
    before = factory.count(Escalation)
    for body, code in (
        ({"facility_id": str(w["b"].id)}, "unknown_facility"),
        ({"facility_id": str(uuid.uuid4())}, "unknown_facility"),
        ({"location_unit_id": str(w["unit_b"].id)}, "unknown_housing_unit"),
        ({"facility_id": str(w["a"].id), "location_unit_id": str(w["unit_b"].id)},
         "unknown_housing_unit"),
        ({"participant_id": str(w["mine"].id), "facility_id": str(w["b"].id)},
         "unknown_facility"),
    ):
        r = _raise(client, w["h"]["officer"], **body)
        assert r.status_code == 422 and r.json()["code"] == code, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
    # a raiser of several facilities names the place when they name nobody they can see
    r = _raise(client, w["h"]["coord_all"], external_id={"source": "booking", "value": "X"})
    assert r.status_code == 422 and r.json()["code"] == "place_required"
    r = _raise(client, w["h"]["clin_ab"], participant_id=str(uuid.uuid4()))
    assert r.status_code == 422 and r.json()["code"] == "place_required"
    assert factory.count(Escalation) == before


def test_one_identifier_at_most(client, factory, w):
    r = _raise(client, w["h"]["officer"], participant_id=str(w["mine"].id),
               external_id={"source": "booking", "value": "B-1"})
    assert r.status_code == 422
    assert factory.count(Escalation) == 0


def test_a_blind_raise_replays_its_receipt(client, factory, w):
    h = w["h"]["peer"] | {"Idempotency-Key": "yard-2030-01-01T10:00"}
    body = {"category": "self_harm", "description": "Cutting", "tier": "imminent",
            "external_id": {"source": "booking", "value": "B-404"}}
    first = client.post("/v1/escalations", headers=h, json=body)
    again = client.post("/v1/escalations", headers=h, json=body)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json() and again.headers["Idempotent-Replayed"] == "true"
    assert factory.count(Escalation) == 1


# --- linking the subject later ------------------------------------------------------------------

def test_a_clinician_links_the_subject_and_the_walls_follow(client, factory, w):
    raised = _raise(client, w["h"]["officer"], location_text="Cell 12").json()
    eid = raised["id"]
    person = factory.recipient(w["b"], housing_unit_id=w["unit_b"].id)
    etag = client.get(f"/v1/escalations/{eid}", headers=w["h"]["clin_ab"]).headers["ETag"]
    r = client.post(f"/v1/escalations/{eid}/subject", headers=w["h"]["clin_ab"] | {
        "If-Match": etag}, json={"participant_id": str(person.id)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["participant_id"], body["facility_id"], body["location_unit_id"]) == (
        str(person.id), str(w["b"].id), str(w["unit_b"].id))
    assert body["location_text"] == "Cell 12"
    assert factory.audits("escalation.link_subject")
    linked = factory.events("escalation.subject_linked")
    assert len(linked) == 1 and linked[0].facility_id == w["b"].id and linked[0].data == {}
    entry = client.get(f"/v1/escalations/{eid}/timeline", headers=w["h"]["clin_ab"]).json()[-1]
    assert entry["kind"] == "subject_linked" and entry["detail"] == {
        "participant_id": str(person.id), "from_participant_id": None,
        "facility_id": str(w["b"].id), "from_facility_id": str(w["a"].id),
        "network": "incarcerated", "from_network": "incarcerated"}
    # now at B: out of reach of A's clinician; the raiser still holds the same receipt
    assert client.get(f"/v1/escalations/{eid}", headers=w["h"]["clin"]).status_code == 404
    assert client.get(f"/v1/escalations/{eid}", headers=w["h"]["officer"]).json() == raised


def test_linking_refusals(client, factory, w):
    eid = _raise(client, w["h"]["officer"], location_text="Cell 3").json()["id"]
    url = f"/v1/escalations/{eid}/subject"
    elsewhere = factory.recipient(w["b"])
    r = client.post(url, headers=w["h"]["coord"], json={"participant_id": str(elsewhere.id)})
    assert r.status_code == 422 and r.json()["code"] == "unknown_participant"
    r = client.post(url, headers=w["h"]["officer"], json={"participant_id": str(w["mine"].id)})
    assert r.status_code == 403
    r = client.post(url, headers=w["h"]["coord"] | {"If-Match": '"99"'},
                    json={"participant_id": str(w["mine"].id)})
    assert r.status_code == 412
    client.post(f"/v1/escalations/{eid}/acknowledge", headers=w["h"]["clin"], json={})
    client.post(f"/v1/escalations/{eid}/resolve", headers=w["h"]["clin"],
                json={"outcome": "x", "follow_up_plan": "y", "review_date": "2030-01-01"})
    r = client.post(url, headers=w["h"]["coord"], json={"participant_id": str(w["mine"].id)})
    assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
    assert _stored_id(factory, eid).participant_id is None
    assert not factory.events("escalation.subject_linked")


def _stored_id(factory: Any, eid: str) -> Escalation:
    return factory.get(Escalation, uuid.UUID(eid))


def test_a_subject_is_corrected_and_the_history_kept(client, factory, w):
    wrong, right = factory.recipient(w["a"]), factory.recipient(w["a"])
    eid = _raise(client, w["h"]["officer"], participant_id=str(wrong.id)).json()["id"]
    r = client.post(f"/v1/escalations/{eid}/subject", headers=w["h"]["coord"],
                    json={"participant_id": str(right.id)})
    assert r.status_code == 200 and r.json()["participant_id"] == str(right.id)
    same = client.post(f"/v1/escalations/{eid}/subject", headers=w["h"]["coord"],
                       json={"participant_id": str(right.id)})
    assert same.status_code == 200 and same.json()["version"] == r.json()["version"]
    linked = [e for e in client.get(f"/v1/escalations/{eid}/timeline",
                                    headers=w["h"]["coord"]).json()
              if e["kind"] == "subject_linked"]
    assert [(e["detail"]["from_participant_id"], e["detail"]["participant_id"])
            for e in linked] == [(str(wrong.id), str(right.id))]


def test_a_staff_subject_moves_it_behind_the_staff_wall(client, factory, w):
    eid = _raise(client, w["h"]["clin"], facility_id=str(w["a"].id)).json()["id"]
    staff = factory.participant(w["a"], "staff")
    assert client.get(f"/v1/escalations/{eid}", headers=w["h"]["coord"]).status_code == 200
    r = client.post(f"/v1/escalations/{eid}/subject", headers=w["h"]["staff_coord"],
                    json={"participant_id": str(staff.id)})
    assert r.status_code == 404  # the staff network's coordinator never saw it
    r = client.post(f"/v1/escalations/{eid}/subject", headers=w["h"]["clin_ab"],
                    json={"participant_id": str(staff.id)})
    assert r.status_code == 200 and r.json()["network"] == "staff"
    assert client.get(f"/v1/escalations/{eid}", headers=w["h"]["coord"]).status_code == 404
    assert client.get(f"/v1/escalations/{eid}", headers=w["h"]["staff_coord"]).status_code == 200
    # an incarcerated-network reader of the timeline is never shown a staff member's id
    later = factory.recipient(w["a"])
    assert client.post(f"/v1/escalations/{eid}/subject", headers=w["h"]["clin_ab"],
                       json={"participant_id": str(later.id)}).status_code == 200
    entries = [e for e in client.get(f"/v1/escalations/{eid}/timeline",
                                     headers=w["h"]["coord"]).json()
               if e["kind"] == "subject_linked"]
    assert entries[-1]["detail"]["from_participant_id"] is None
    assert entries[0]["detail"]["participant_id"] is None  # the staff member, for a coordinator


# --- what a subjectless escalation does ---------------------------------------------------------

def test_a_subjectless_escalation_blocks_nothing_it_cannot_name(client, factory, w):
    _raise(client, w["h"]["officer"], location_text="Unit 4 day room", tier="imminent")
    sup = factory.certified_supporter(w["a"])
    propose = {"supporter_id": str(sup.id), "recipient_id": str(factory.recipient(w["a"]).id)}
    r = client.post("/v1/pairings", headers=w["h"]["coord"], json=propose)
    assert r.status_code == 201, r.text
    eid = _raise(client, w["h"]["officer"], location_text="Unit 4", tier="imminent").json()["id"]
    client.post(f"/v1/escalations/{eid}/subject", headers=w["h"]["coord"],
                json={"participant_id": str(sup.id)})
    propose["recipient_id"] = str(factory.recipient(w["a"]).id)
    r = client.post("/v1/pairings", headers=w["h"]["coord"], json=propose)
    assert r.status_code == 422 and r.json()["code"] == "supporter_escalation"


def test_a_subjectless_escalation_breaches_up_the_chain(app, client, factory, w):
    # Someone on call at each level (a moderate raise pages nobody; its breach, level 1).
    for level, who in (("on_call_clinician", "clin"), ("duty_supervisor", "officer"),
                       ("facility_commander", "coord")):
        factory.shift(w["a"], w["users"][who], level)
    eid = _raise(client, w["h"]["peer"], location_text="Chapel", tier="moderate").json()["id"]

    async def sweep() -> dict[str, int]:
        async with app.state.sessionmaker() as s:
            return await breach_sweep(s, app.state.settings,
                                      datetime.now(UTC) + timedelta(minutes=61))
    assert asyncio.run(sweep()) == {"breached": 1}
    seen = client.get(f"/v1/escalations/{eid}", headers=w["h"]["clin"]).json()
    assert seen["chain_level"] == 1 and seen["participant_id"] is None
