"""Referrals as their users notice them.

- Who refers, as what source: coordinators, clinicians, officers inside their walls; a peer
  supporter someone they support (`peer`) or anyone of their network at their facilities who
  asked them (`self_via_peer`); an integration by an external id. Anyone else: 404 (a person
  they may not refer) or 403 (a role that does not refer).
- The workflow from its table: received -> triaged -> matched | declined | withdrawn, each
  state's stamp written once, terminal states terminal, If-Match honoured.
- A high-risk reason opens a crisis escalation in the same transaction, like a risk disclosure.
- The queue: most urgent first, then oldest, with a keyset cursor that neither skips nor repeats.
- The walls: coordinators and clinicians their facilities and network; everyone else (officer,
  peer, integration) the referrals they made; events follow the same rule.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from app.models import Escalation, OutboxEvent, ParticipantExternalId, Referral
from app.models.common import Role
from app.models.referral import ReferralStatus
from app.services.referrals import REFERRAL_FLOW

PROBLEM = "application/problem+json"


@pytest.fixture()
def w(factory: Any) -> dict[str, Any]:
    """Facility A (everyone's) and B; a peer who supports one person at A; people around."""
    a, b = factory.facility(), factory.facility()
    unit = factory.unit(a)
    sup = factory.certified_supporter(a)
    mine = factory.recipient(a, housing_unit_id=unit.id)
    factory.pairing(sup, mine)
    users = {
        "coord": factory.user(Role.coordinator, [a]),
        "coord2": factory.user(Role.coordinator, [a]),
        "staff_coord": factory.user(Role.staff_coordinator, [a]),
        "clin": factory.user(Role.clinician, [a]),
        "officer": factory.user(Role.officer, [a]),
        "officer2": factory.user(Role.officer, [a]),
        "peer": factory.user(Role.peer_supporter, [a], participant=sup),
        "auditor": factory.user(Role.auditor, [a]),
        "admin": factory.user(Role.admin),
    }
    jms = factory.api_client(["referrals:read", "referrals:write", "events:read"], [a],
                             ["incarcerated"])
    return {"a": a, "b": b, "unit": unit, "sup": sup, "mine": mine, "users": users, "jms": jms,
            "h": {k: factory.headers(u) for k, u in users.items()} | {
                "jms": factory.headers(jms)}}


def _refer(client: Any, h: dict[str, str], *, key: str | None = None, **body: Any) -> Any:
    body = {"reason_category": "isolation"} | body
    return client.post("/v1/referrals", json=body,
                       headers=h | {"Idempotency-Key": key or str(uuid.uuid4())})


def _move(client: Any, h: dict[str, str], rid: Any, action: str,
          body: dict[str, Any] | None = None, **headers: str) -> Any:
    return client.post(f"/v1/referrals/{rid}/{action}", json=body or {},
                       headers=h | {"Idempotency-Key": str(uuid.uuid4())} | headers)


# --- who refers, as what ----------------------------------------------------------------------

@pytest.mark.parametrize(("who", "source"), [("coord", "coordinator"), ("clin", "clinician"),
                                             ("officer", "officer")])
def test_staff_refer_a_person_in_their_walls_as_their_role(client, factory, w, who, source):
    person = factory.recipient(w["a"], housing_unit_id=w["unit"].id)
    r = _refer(client, w["h"][who], participant_id=str(person.id), urgency="soon",
               summary="Withdrawn since his sentencing")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["source"] == source and body["status"] == "received"
    assert body["urgency"] == "soon" and body["reason_category"] == "isolation"
    assert body["facility_id"] == str(w["a"].id) and body["network"] == "incarcerated"
    assert body["housing_unit_id"] == str(w["unit"].id)  # the unit at referral
    assert body["received_at"] and body["triaged_at"] is None
    assert body["referred_by"] == f"user:{w['users'][who].id}"
    assert r.headers["ETag"] == '"1"' and r.headers["Location"] == f"/v1/referrals/{body['id']}"
    assert [e.type for e in factory.events("referral.received")] == ["referral.received"]
    assert len(factory.audits("referral.create")) == 1


def test_an_integration_refers_by_external_id(client, factory, w):
    person = factory.recipient(w["a"], external=("jms", "BK-1001"))
    r = _refer(client, w["h"]["jms"], external_id={"source": "jms", "value": "BK-1001"},
               reason_category="adjustment_to_custody")
    assert r.status_code == 201, r.text
    assert r.json()["participant_id"] == str(person.id)
    assert r.json()["source"] == "integration"
    assert r.json()["referred_by"] == f"client:{w['jms'].id}"
    # an id the JMS never sent, or a person of another facility: not found, nothing written
    other = factory.recipient(w["b"], external=("jms", "BK-2002"))
    for value in ("BK-NOPE", "BK-2002"):
        r = _refer(client, w["h"]["jms"], external_id={"source": "jms", "value": value})
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    assert other and factory.count(Referral) == 1


def test_a_peer_refers_someone_they_support_or_passes_on_a_request(client, factory, w):
    stranger = factory.recipient(w["a"], housing_unit_id=w["unit"].id)
    # someone they support: source peer (the default)
    r = _refer(client, w["h"]["peer"], participant_id=str(w["mine"].id))
    assert r.status_code == 201 and r.json()["source"] == "peer"
    # someone they do not support, as a peer referral: no such person for them
    r = _refer(client, w["h"]["peer"], participant_id=str(stranger.id), source="peer")
    assert r.status_code == 404
    # the same person asked them: a self-referral through a peer
    r = _refer(client, w["h"]["peer"], participant_id=str(stranger.id), source="self_via_peer")
    assert r.status_code == 201 and r.json()["source"] == "self_via_peer"
    # and the peer learns nothing more than they gave: not whom the server found, nor where
    assert r.json()["housing_unit_id"] is None and r.json()["participant_id"] is None
    again = client.get(f"/v1/referrals/{r.json()['id']}", headers=w["h"]["peer"]).json()
    assert again["participant_id"] is None and again["housing_unit_id"] is None
    assert factory.get(Referral, uuid.UUID(r.json()["id"])).housing_unit_id == w["unit"].id
    # not across facilities or networks
    for person in (factory.recipient(w["b"]), factory.recipient(w["a"], "staff")):
        r = _refer(client, w["h"]["peer"], participant_id=str(person.id),
                   source="self_via_peer")
        assert r.status_code == 404
    assert factory.count(Referral) == 2


def test_a_source_the_role_cannot_be_is_refused(client, factory, w):
    person = factory.recipient(w["a"])
    r = _refer(client, w["h"]["officer"], participant_id=str(person.id), source="clinician")
    assert r.status_code == 422 and r.json()["code"] == "source_not_allowed"
    assert r.headers["content-type"] == PROBLEM
    assert factory.count(Referral) == 0


@pytest.mark.parametrize("who", ["auditor", "admin"])
def test_roles_that_do_not_refer_are_refused(client, factory, w, who):
    person = factory.recipient(w["a"])
    r = _refer(client, w["h"][who], participant_id=str(person.id))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    assert client.get("/v1/referrals", headers=w["h"][who]).status_code == 403


def test_outside_the_walls_is_not_found_and_bad_input_changes_nothing(client, factory, w):
    for person in (factory.recipient(w["b"]), factory.recipient(w["a"], "staff")):
        r = _refer(client, w["h"]["coord"], participant_id=str(person.id))
        assert r.status_code == 404
    r = _refer(client, w["h"]["coord"], participant_id=str(uuid.uuid4()))
    assert r.status_code == 404
    person = factory.recipient(w["a"])
    for bad in ({"reason_category": "boredom"}, {"urgency": "yesterday"},
                {"participant_id": None}, {"external_id": {"source": "jms", "value": "x"}},
                {"escalation_id": str(uuid.uuid4())}):
        r = _refer(client, w["h"]["coord"], **({"participant_id": str(person.id)} | bad))
        assert r.status_code == 422, bad
        assert r.headers["content-type"] == PROBLEM
    assert factory.count(Referral) == 0 and factory.count(OutboxEvent) == 0


@pytest.mark.parametrize("gone", [{"custody_status": "released"},
                                  {"custody_status": "transferred"},
                                  {"archived_at": datetime(2026, 1, 1, tzinfo=UTC)}])
def test_a_person_no_longer_here_is_not_referred(client, factory, w, gone):
    person = factory.recipient(w["a"], **gone)
    r = _refer(client, w["h"]["coord"], participant_id=str(person.id),
               reason_category="suicide_risk")
    assert r.status_code == 422 and r.json()["code"] == "person_not_present"
    assert factory.count(Referral) == 0 and factory.count(Escalation) == 0


def test_a_retried_referral_is_the_first_one(client, factory, w):
    person = factory.recipient(w["a"])
    first = _refer(client, w["h"]["officer"], key="ref-1", participant_id=str(person.id),
                   reason_category="self_harm_risk")
    again = _refer(client, w["h"]["officer"], key="ref-1", participant_id=str(person.id),
                   reason_category="self_harm_risk")
    assert first.status_code == again.status_code == 201
    assert first.json()["id"] == again.json()["id"]
    assert factory.count(Referral) == 1 and factory.count(Escalation) == 1


# --- a high-risk reason opens an escalation ---------------------------------------------------

@pytest.mark.parametrize(("reason", "category"), [("suicide_risk", "suicide_risk"),
                                                  ("self_harm_risk", "self_harm")])
def test_a_high_risk_reason_opens_an_escalation_in_the_same_transaction(
        client, factory, w, reason, category):
    person = factory.recipient(w["a"], housing_unit_id=w["unit"].id)
    r = _refer(client, w["h"]["officer"], participant_id=str(person.id), reason_category=reason,
               urgency="urgent")
    assert r.status_code == 201, r.text
    esc_id = r.json()["escalation_id"]
    assert esc_id is not None
    esc = factory.get(Escalation, uuid.UUID(esc_id))
    assert (esc.participant_id, esc.category, esc.tier, esc.status) == (
        person.id, category, "high", "open")
    assert esc.facility_id == w["a"].id and esc.raised_by == f"user:{w['users']['officer'].id}"
    assert esc.location_unit_id == w["unit"].id
    types = [e.type for e in factory.events()]
    assert "escalation.created" in types and "referral.received" in types
    # one transaction: one commit's audit rows, the referral's create first (the
    # Idempotency-Key claim's record)
    actions = [a.action for a in factory.audits()]
    assert actions.index("referral.create") < actions.index("escalation.create")
    # the clinician working the escalation finds it, the officer sees it on the dashboard
    got = client.get(f"/v1/escalations/{esc_id}", headers=w["h"]["clin"])
    assert got.status_code == 200 and got.json()["category"] == category


def test_an_integration_or_a_peer_at_risk_referral_raises_as_they_would(client, factory, w):
    """The JMS's referral is raised by the client, inside its walls; a peer's about someone
    they support is an ordinary (not blind) raise they read as its status."""
    person = factory.recipient(w["a"], external=("jms", "BK-77"))
    r = _refer(client, w["h"]["jms"], external_id={"source": "jms", "value": "BK-77"},
               reason_category="suicide_risk")
    assert r.status_code == 201, r.text
    esc = factory.get(Escalation, uuid.UUID(r.json()["escalation_id"]))
    assert esc.raised_by == f"client:{w['jms'].id}" and esc.participant_id == person.id
    assert esc.raised_blind is False
    r = _refer(client, w["h"]["peer"], participant_id=str(w["mine"].id),
               reason_category="self_harm_risk")
    esc = factory.get(Escalation, uuid.UUID(r.json()["escalation_id"]))
    assert esc.raised_blind is False and esc.participant_id == w["mine"].id
    seen = client.get(f"/v1/escalations/{esc.id}", headers=w["h"]["peer"])
    assert seen.status_code == 200 and seen.json()["status"] == "open"


def test_an_ordinary_reason_opens_nothing(client, factory, w):
    person = factory.recipient(w["a"])
    r = _refer(client, w["h"]["coord"], participant_id=str(person.id),
               reason_category="grief_loss", urgency="urgent")
    assert r.status_code == 201 and r.json()["escalation_id"] is None
    assert factory.count(Escalation) == 0


def test_a_self_referral_at_risk_through_a_peer_is_a_blind_raise(client, factory, w):
    """The peer cannot see the person: the escalation is raised at the person's facility
    against them, and the peer holds a receipt of it, as any blind raise."""
    stranger = factory.recipient(w["a"])
    r = _refer(client, w["h"]["peer"], participant_id=str(stranger.id), source="self_via_peer",
               reason_category="suicide_risk")
    assert r.status_code == 201, r.text
    esc = factory.get(Escalation, uuid.UUID(r.json()["escalation_id"]))
    assert esc.participant_id == stranger.id and esc.raised_blind is True
    receipt = client.get(f"/v1/escalations/{esc.id}", headers=w["h"]["peer"]).json()
    assert "participant_id" not in receipt and "tier" not in receipt
    # by a booking number: the receipt holds what they gave, nothing the server found
    factory._save(ParticipantExternalId(participant_id=stranger.id, source="jms",
                                        value="BK-55"))
    r = _refer(client, w["h"]["peer"], external_id={"source": "jms", "value": "BK-55"},
               source="self_via_peer", reason_category="self_harm_risk")
    assert r.status_code == 201, r.text
    receipt = client.get(f"/v1/escalations/{r.json()['escalation_id']}",
                         headers=w["h"]["peer"]).json()
    assert receipt["reported"]["external_id"] == {"source": "jms", "value": "BK-55"}
    assert receipt["reported"]["participant_id"] is None


# --- the workflow -----------------------------------------------------------------------------

def _bodies(factory: Any, w: dict[str, Any], person: Any) -> dict[str, dict[str, Any]]:
    return {"triage": {"urgency": "urgent"},
            "match": {"pairing_id": str(factory.pairing(factory.certified_supporter(w["a"]),
                                                        person, status="proposed").id)},
            "decline": {"reason": "already_supported", "note": "Has a counsellor"},
            "withdraw": {"reason": "He changed his mind"}}


CASES = [(action, status) for action in REFERRAL_FLOW for status in ReferralStatus]


@pytest.mark.parametrize(("action", "status"), CASES)
def test_the_workflow_follows_its_table(client, factory, w, action, status):
    person = factory.recipient(w["a"])
    ref = factory.referral(person, status=status.value)
    t = REFERRAL_FLOW[action]
    r = _move(client, w["h"]["coord"], ref.id, action, _bodies(factory, w, person)[action])
    stored = factory.get(Referral, ref.id)
    if status.value in t.sources:
        assert r.status_code == 200, r.text
        assert r.json()["status"] == t.target == stored.status
        stamp = {"triaged": "triaged", "matched": "matched", "declined": "declined",
                 "withdrawn": "withdrawn"}[t.target]
        assert r.json()[f"{stamp}_at"] is not None
        assert r.json()[f"{stamp}_by"] == f"user:{w['users']['coord'].id}"
        assert r.json()["version"] == 2 and r.headers["ETag"] == '"2"'
        assert [e.type for e in factory.events()] == [f"referral.{stamp}"]
        assert [a.action for a in factory.audits()][-1] == f"referral.{action}"
    else:
        assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
        assert stored.status == status.value and stored.version == 1
        assert factory.count(OutboxEvent) == 0


def test_a_full_run_stamps_each_transition_once(client, factory, w):
    person = factory.recipient(w["a"])
    rid = _refer(client, w["h"]["officer"], participant_id=str(person.id)).json()["id"]
    r = _move(client, w["h"]["coord"], rid, "triage", {"urgency": "urgent"})
    assert r.status_code == 200 and r.json()["urgency"] == "urgent"
    triaged_at = r.json()["triaged_at"]
    pairing = factory.pairing(factory.certified_supporter(w["a"]), person)
    r = _move(client, w["h"]["coord"], rid, "match", {"pairing_id": str(pairing.id)},
              **{"If-Match": r.headers["ETag"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "matched" and body["matched_pairing_id"] == str(pairing.id)
    assert body["triaged_at"] == triaged_at and body["matched_at"] >= triaged_at
    # terminal: nothing moves it again, and its stamps stay
    for action, extra in (("decline", {"reason": "other"}), ("withdraw", {}), ("triage", {})):
        again = _move(client, w["h"]["coord"], rid, action, extra)
        assert again.status_code == 409 and again.json()["code"] == "invalid_transition"
    assert client.get(f"/v1/referrals/{rid}", headers=w["h"]["coord"]).json() == body
    assert [e.type for e in factory.events()] == [
        "referral.received", "referral.triaged", "referral.matched"]


def test_only_coordinators_work_the_queue(client, factory, w):
    person = factory.recipient(w["a"])
    ref = factory.referral(person, referred_by=f"user:{w['users']['clin'].id}")
    for action, body in (("triage", {}), ("decline", {"reason": "other"})):
        r = _move(client, w["h"]["clin"], ref.id, action, body)
        assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    assert factory.get(Referral, ref.id).status == "received"
    # and the table says so too, whatever a token carries
    assert REFERRAL_FLOW["triage"].roles == frozenset({Role.coordinator, Role.staff_coordinator})


def test_the_referrer_or_a_coordinator_withdraws(client, factory, w):
    person = factory.recipient(w["a"])
    officer, clin = w["users"]["officer"], w["users"]["clin"]
    mine = factory.referral(person, referred_by=f"user:{officer.id}")
    theirs = factory.referral(person, referred_by=f"user:{officer.id}")
    # a clinician reads every referral of the facility, but withdraws only their own
    r = _move(client, w["h"]["clin"], theirs.id, "withdraw")
    assert r.status_code == 403 and r.json()["code"] == "not_the_referrer"
    # another officer does not even see it
    assert _move(client, w["h"]["officer2"], theirs.id, "withdraw").status_code == 404
    r = _move(client, w["h"]["officer"], mine.id, "withdraw", {"reason": "Moved to medical"})
    assert r.status_code == 200 and r.json()["withdrawn_by"] == f"user:{officer.id}"
    r = _move(client, w["h"]["coord"], theirs.id, "withdraw")
    assert r.status_code == 200 and r.json()["status"] == "withdrawn"
    own = factory.referral(person, referred_by=f"user:{clin.id}", status="triaged")
    assert _move(client, w["h"]["clin"], own.id, "withdraw").status_code == 200


def test_a_stale_etag_is_412_and_changes_nothing(client, factory, w):
    ref = factory.referral(factory.recipient(w["a"]))
    r = _move(client, w["h"]["coord"], ref.id, "triage", {}, **{"If-Match": '"7"'})
    assert r.status_code == 412 and r.json()["code"] == "version_mismatch"
    assert factory.get(Referral, ref.id).status == "received"
    got = client.get(f"/v1/referrals/{ref.id}", headers=w["h"]["coord"])
    assert got.headers["ETag"] == '"1"'
    r = _move(client, w["h"]["coord"], ref.id, "triage", {}, **{"If-Match": got.headers["ETag"]})
    assert r.status_code == 200


def test_a_decline_needs_a_reason(client, factory, w):
    ref = factory.referral(factory.recipient(w["a"]), status="triaged")
    r = _move(client, w["h"]["coord"], ref.id, "decline", {"note": "no"})
    assert r.status_code == 422 and factory.get(Referral, ref.id).status == "triaged"
    r = _move(client, w["h"]["coord"], ref.id, "decline", {"reason": "person_declined"})
    assert r.status_code == 200 and r.json()["decline_reason"] == "person_declined"


def test_a_match_is_to_the_persons_pairing_or_group(client, factory, w):
    person, other = factory.recipient(w["a"]), factory.recipient(w["a"])
    sup = factory.certified_supporter(w["a"])
    ref = factory.referral(person, status="triaged")
    cases = [
        ({"pairing_id": str(factory.pairing(sup, other).id)}, 422, "match_not_for_person"),
        ({"pairing_id": str(factory.pairing(sup, person, status="ended").id)}, 409,
         "match_closed"),
        ({"session_id": str(factory.support_session(facility=w["a"]).id)}, 422,
         "match_not_for_person"),  # a group without the person on its list
        ({"session_id": str(factory.support_session(factory.pairing(sup, person)).id)}, 422,
         "match_not_for_person"),  # a one-to-one is not a group
        ({"pairing_id": str(uuid.uuid4()), "session_id": str(uuid.uuid4())}, 422, None),
        ({}, 422, None),
    ]
    for body, status, code in cases:
        r = _move(client, w["h"]["coord"], ref.id, "match", body)
        assert r.status_code == status, (body, r.text)
        if code:
            assert r.json()["code"] == code
    assert factory.get(Referral, ref.id).status == "triaged"
    group = factory.support_session(facility=w["a"], facilitator=sup)
    from tests.factories import SessionAttendee  # the person is on the group's list
    factory._save(SessionAttendee.of(group, person.id))
    r = _move(client, w["h"]["coord"], ref.id, "match", {"session_id": str(group.id)})
    assert r.status_code == 200, r.text
    assert r.json()["matched_session_id"] == str(group.id)
    assert r.json()["matched_pairing_id"] is None


# --- the queue --------------------------------------------------------------------------------

def test_the_queue_is_most_urgent_then_oldest_and_pages_by_keyset(client, factory, w):
    person = factory.recipient(w["a"])
    t0 = datetime(2026, 11, 1, 9, 0, tzinfo=UTC)
    made = {
        "routine_old": factory.referral(person, urgency="routine", received_at=t0),
        "urgent_new": factory.referral(person, urgency="urgent",
                                       received_at=t0 + timedelta(days=3)),
        "soon": factory.referral(person, urgency="soon", received_at=t0 + timedelta(days=1)),
        "urgent_old": factory.referral(person, urgency="urgent",
                                       received_at=t0 + timedelta(days=2)),
        "routine_new": factory.referral(person, urgency="routine",
                                        received_at=t0 + timedelta(days=4)),
        # two at the same instant: the id breaks the tie, and the cursor holds it
        "routine_tie1": factory.referral(person, urgency="routine",
                                         received_at=t0 + timedelta(days=5)),
        "routine_tie2": factory.referral(person, urgency="routine",
                                         received_at=t0 + timedelta(days=5)),
        "triaged": factory.referral(person, urgency="urgent", status="triaged",
                                    received_at=t0),
        "declined": factory.referral(person, urgency="urgent", status="declined",
                                     received_at=t0),
    }
    ids = {str(v.id): k for k, v in made.items()}
    # Ids made in one millisecond are ordered by their random part: the tie goes by id.
    ties = sorted(["routine_tie1", "routine_tie2"], key=lambda k: made[k].id)
    expected = ["urgent_old", "urgent_new", "soon", "routine_old", "routine_new", *ties]
    r = client.get("/v1/referrals?status=received", headers=w["h"]["coord"])
    assert [ids[i["id"]] for i in r.json()["items"]] == expected
    paged, cursor = [], None
    while True:
        url = "/v1/referrals?status=received&limit=2" + (f"&cursor={cursor}" if cursor else "")
        body = client.get(url, headers=w["h"]["coord"]).json()
        paged += [ids[i["id"]] for i in body["items"]]
        cursor = body["next_cursor"]
        if not cursor:
            break
    assert paged == expected
    both = client.get("/v1/referrals?status=received&status=triaged",
                      headers=w["h"]["coord"]).json()["items"]
    assert [ids[i["id"]] for i in both][:2] == ["triaged", "urgent_old"]  # same time: id order
    assert len(client.get("/v1/referrals", headers=w["h"]["coord"]).json()["items"]) == 9
    bad = client.get("/v1/referrals?cursor=bm9wZQ", headers=w["h"]["coord"])
    assert bad.status_code == 422 and bad.json()["code"] == "invalid_cursor"


# --- walls ------------------------------------------------------------------------------------

def test_the_walls_per_role(client, factory, w):
    a, b = w["a"], w["b"]
    u = w["users"]
    inc_a, staff_a, inc_b = factory.recipient(a), factory.recipient(a, "staff"), factory.recipient(b)
    refs = {
        "inc_a_by_officer": factory.referral(inc_a, referred_by=f"user:{u['officer'].id}"),
        "inc_a_by_peer": factory.referral(w["mine"], referred_by=f"user:{u['peer'].id}",
                                          source="peer"),
        "inc_a_by_jms": factory.referral(inc_a, referred_by=f"client:{w['jms'].id}",
                                         source="integration"),
        "staff_a": factory.referral(staff_a, referred_by=f"user:{u['clin'].id}",
                                    source="clinician"),
        "inc_b": factory.referral(inc_b),
    }
    names = {str(v.id): k for k, v in refs.items()}
    expected = {
        "coord": {"inc_a_by_officer", "inc_a_by_peer", "inc_a_by_jms"},
        "staff_coord": {"staff_a"},
        "clin": {"inc_a_by_officer", "inc_a_by_peer", "inc_a_by_jms", "staff_a"},
        "officer": {"inc_a_by_officer"},
        "officer2": set(),
        "peer": {"inc_a_by_peer"},
        "jms": {"inc_a_by_jms"},
    }
    for who, names_seen in expected.items():
        listed = {names[i["id"]] for i in client.get(
            "/v1/referrals?limit=200", headers=w["h"][who]).json()["items"]}
        assert listed == names_seen, who
        for name, ref in refs.items():
            code = client.get(f"/v1/referrals/{ref.id}", headers=w["h"][who]).status_code
            assert code == (200 if name in names_seen else 404), (who, name)


def test_a_referrer_who_reads_only_their_own_does_not_see_the_decline_note(client, factory, w):
    officer = w["users"]["officer"]
    ref = factory.referral(factory.recipient(w["a"]), referred_by=f"user:{officer.id}")
    r = _move(client, w["h"]["coord"], ref.id, "decline",
              {"reason": "other", "note": "Keep-apart with his cellmate's co-defendant"})
    assert r.json()["decline_note"]
    seen = client.get(f"/v1/referrals/{ref.id}", headers=w["h"]["officer"]).json()
    assert seen["decline_reason"] == "other" and seen["decline_note"] is None


def test_events_are_thin_and_follow_the_wall(client, factory, w):
    person = factory.recipient(w["a"])
    mine = _refer(client, w["h"]["jms"], participant_id=str(person.id),
                  summary="Asked at intake").json()["id"]
    other = _refer(client, w["h"]["coord"], participant_id=str(person.id)).json()["id"]
    events = factory.events("referral.received")
    assert len(events) == 2
    for e in events:
        assert e.data == {"status": "received"}  # never the summary or the reason
    feed = client.get("/v1/events", headers=w["h"]["jms"]).json()["items"]
    referral_events = [e for e in feed if e["type"].startswith("referral.")]
    assert [e["data"]["id"] for e in referral_events] == [mine]
    assert referral_events[0]["url"] == f"/v1/referrals/{mine}"
    assert other != mine
