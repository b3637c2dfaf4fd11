"""Who may lead, join and hold a support session: rule 2 for a group's facilitator (the same
pure rules as a pairing's supporter), one-to-one sessions only in an active pairing, a peer
filling their own group (told only `not_eligible`), and disclosures only from a session held."""

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from app.models import Disclosure, Escalation, Participant
from app.models.common import Role


@pytest.fixture()
def ctx(factory):
    f = factory.facility("CCJ")
    sup = factory.certified_supporter(f)
    rec = factory.recipient(f)
    pairing = factory.pairing(sup, rec)
    peer = factory.user(Role.peer_supporter, [f], participant=sup)
    coord = factory.user(Role.coordinator, [f])
    return {"f": f, "sup": sup, "rec": rec, "pairing": pairing,
            "peer": factory.headers(peer), "h": factory.headers(coord)}


def _when(hours=1):
    return (datetime.now(UTC) + timedelta(hours=hours)).isoformat()


def _group(client, headers, facility, facilitator=None):
    body = {"kind": "group", "facility_id": str(facility.id), "scheduled_at": _when()}
    if facilitator is not None:
        body["facilitator_id"] = str(facilitator.id)
    return client.post("/v1/support-sessions", headers=headers, json=body)


# --- rule 2 for a group's facilitator ----------------------------------------------------------

# Each way a supporter falls out of rule 2, and what the coordinator is told of it.
_UNFIT = {
    "released": ({"custody_status": "released"}, "not in custody"),
    "transferred": ({"custody_status": "transferred"}, "not in custody"),
    "unavailable": ({"supporter_availability": "unavailable"}, "not available"),
    "inactive": ({"supporter_availability": "inactive"}, "not available"),
    "archived": ({"archived_at": datetime(2026, 1, 1, tzinfo=UTC)}, "archived"),
    "in_crisis": ({}, "escalation"),
}


@pytest.mark.parametrize("state", sorted(_UNFIT))
def test_a_facilitator_must_meet_rule_2(client, factory, ctx, state):
    changes, said = _UNFIT[state]
    person = factory.certified_supporter(ctx["f"], **changes)
    if state == "in_crisis":
        factory.escalation(person, tier="high")
    r = _group(client, ctx["h"], ctx["f"], person)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "facilitator_not_eligible"
    assert said in r.json()["detail"]  # the coordinator is told which rule


def test_a_low_or_resolved_escalation_does_not_stop_a_facilitator(client, factory, ctx):
    person = factory.certified_supporter(ctx["f"])
    factory.escalation(person, tier="low")
    factory.escalation(person, tier="imminent", status="resolved")
    assert _group(client, ctx["h"], ctx["f"], person).status_code == 201


def test_a_staff_network_facilitator_must_be_employed(client, factory, ctx):
    staff_coord = factory.headers(factory.user(Role.staff_coordinator, [ctx["f"]]))
    on_leave = factory.certified_supporter(ctx["f"], "staff", employment_status="on_leave")
    r = _group(client, staff_coord, ctx["f"], on_leave)
    assert r.status_code == 422 and r.json()["code"] == "facilitator_not_eligible"
    assert "not currently employed" in r.json()["detail"]
    assert _group(client, staff_coord, ctx["f"],
                  factory.certified_supporter(ctx["f"], "staff")).status_code == 201


def test_a_peer_out_of_rule_2_cannot_schedule_their_own_group(client, factory, ctx):
    """The peer learns that they cannot lead a group now, not which rule (an escalation about
    them is not theirs to read, and naming every other rule would name it by elimination)."""
    assert _group(client, ctx["peer"], ctx["f"]).status_code == 201
    factory.escalation(ctx["sup"], tier="imminent")
    r = _group(client, ctx["peer"], ctx["f"])
    assert r.status_code == 422 and r.json()["code"] == "facilitator_not_eligible"
    assert "escalation" not in r.text.lower() and "crisis" not in r.text.lower()
    unavailable = factory.certified_supporter(ctx["f"], supporter_availability="unavailable")
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=unavailable))
    r2 = _group(client, peer, ctx["f"])
    assert r2.status_code == 422 and r2.json()["detail"] == r.json()["detail"]


def test_a_group_is_not_completed_under_a_facilitator_who_fell_out_of_rule_2(client, factory,
                                                                             ctx):
    """Re-checked at completion, as a pairing's session is: things change between scheduling
    and meeting."""
    gid = _group(client, ctx["h"], ctx["f"], ctx["sup"]).json()["id"]
    with factory.engine.begin() as conn:
        conn.execute(update(Participant).where(Participant.id == ctx["sup"].id)
                     .values(supporter_availability="unavailable"))
    done = {"actual_start": _when(-1), "duration_minutes": 30}
    r = client.post(f"/v1/support-sessions/{gid}/complete", headers=ctx["h"], json=done)
    assert r.status_code == 422 and r.json()["code"] == "facilitator_not_eligible"
    assert client.post(f"/v1/support-sessions/{gid}/cancel", headers=ctx["h"],
                       json={"reason": "facilitator away"}).status_code == 200


# --- one-to-one sessions only in an active pairing ---------------------------------------------

def _one_to_one(client, headers, pairing):
    return client.post("/v1/support-sessions", headers=headers, json={
        "kind": "one_to_one", "pairing_id": str(pairing.id), "scheduled_at": _when()})


@pytest.mark.parametrize("status", ["proposed", "paused"])
def test_no_one_to_one_session_is_scheduled_outside_an_active_pairing(client, factory, ctx,
                                                                      status):
    pairing = factory.pairing(ctx["sup"], factory.recipient(ctx["f"]), status=status)
    for who in ("peer", "h"):
        r = _one_to_one(client, ctx[who], pairing)
        assert r.status_code == 422 and r.json()["code"] == "pairing_not_active", (who, r.text)


def test_a_paused_pairings_sessions_wait_and_cannot_be_completed(client, factory, ctx):
    """A pause keeps the schedule (a short leave should not lose it) but nothing is held until
    the pairing resumes; the session may still be cancelled."""
    first = _one_to_one(client, ctx["peer"], ctx["pairing"]).json()
    second = _one_to_one(client, ctx["peer"], ctx["pairing"]).json()
    pairing_url = f"/v1/pairings/{ctx['pairing'].id}"
    assert client.post(f"{pairing_url}/pause", headers=ctx["h"],
                       json={"reason": "supporter on leave"}).status_code == 200
    assert client.get(f"/v1/support-sessions/{first['id']}",
                      headers=ctx["h"]).json()["status"] == "scheduled"
    done = {"actual_start": _when(-1), "duration_minutes": 30}
    for who in ("peer", "h"):
        r = client.post(f"/v1/support-sessions/{first['id']}/complete", headers=ctx[who],
                        json=done)
        assert r.status_code == 422 and r.json()["code"] == "pairing_not_active", who
    assert client.post(f"/v1/support-sessions/{second['id']}/cancel", headers=ctx["peer"],
                       json={"reason": "supporter on leave"}).status_code == 200
    assert client.post(f"{pairing_url}/resume", headers=ctx["h"], json={}).status_code == 200
    r = client.post(f"/v1/support-sessions/{first['id']}/complete", headers=ctx["peer"],
                    json=done)
    assert r.status_code == 200 and r.json()["status"] == "completed"


def test_an_unavailable_supporters_paused_pairing_holds_no_session(client, factory, ctx):
    """The cascade that pauses a pairing when its supporter becomes unavailable stops the
    sessions too."""
    s = _one_to_one(client, ctx["peer"], ctx["pairing"]).json()
    r = client.patch(f"/v1/participants/{ctx['sup'].id}", headers=ctx["h"],
                     json={"supporter_availability": "unavailable"})
    assert r.status_code == 200, r.text
    r = client.post(f"/v1/support-sessions/{s['id']}/complete", headers=ctx["peer"],
                    json={"actual_start": _when(-1), "duration_minutes": 30})
    assert r.status_code == 422 and r.json()["code"] == "pairing_not_active"
    assert _one_to_one(client, ctx["peer"], ctx["pairing"]).json()["code"] == \
        "pairing_not_active"


# --- a peer fills their own group --------------------------------------------------------------

def _add(client, headers, gid, person_id):
    return client.post(f"/v1/support-sessions/{gid}/attendees", headers=headers,
                       json={"participant_id": str(person_id)})


def _refusal(r):
    """What a refusal tells its reader, without the request's own id."""
    return r.status_code, {k: v for k, v in r.json().items() if k != "request_id"}


def test_a_peer_adds_the_people_they_support_to_their_group(client, factory, ctx):
    gid = _group(client, ctx["peer"], ctx["f"]).json()["id"]
    r = _add(client, ctx["peer"], gid, ctx["rec"].id)
    assert r.status_code == 200, r.text
    assert {a["participant_id"] for a in r.json()["attendees"]} == {str(ctx["sup"].id),
                                                                    str(ctx["rec"].id)}
    assert _add(client, ctx["peer"], gid, ctx["rec"].id).json()["code"] == "already_attending"


def test_a_peer_adds_people_a_coordinator_put_in_one_of_their_groups(client, factory, ctx):
    """A coordinator makes someone eligible for a peer's groups by adding them to one; the peer
    then fills the next ones themselves."""
    first = _group(client, ctx["peer"], ctx["f"]).json()["id"]
    member = factory.recipient(ctx["f"])
    assert _add(client, ctx["peer"], first, member.id).json()["code"] == "not_eligible"
    assert _add(client, ctx["h"], first, member.id).status_code == 200
    second = _group(client, ctx["peer"], ctx["f"]).json()["id"]
    assert _add(client, ctx["peer"], second, member.id).status_code == 200
    # Another peer's coordinator-filled group makes no one eligible for this peer.
    other = factory.certified_supporter(ctx["f"])
    theirs = factory.support_session(facility=ctx["f"], facilitator=other)
    stranger = factory.recipient(ctx["f"])
    assert _add(client, ctx["h"], theirs.id, stranger.id).status_code == 200
    assert _add(client, ctx["peer"], second, stranger.id).json()["code"] == "not_eligible"


def test_a_peer_cannot_keep_adding_someone_they_no_longer_support(client, factory, ctx):
    """Someone the peer added through a pairing does not stay eligible once the pairing is
    paused or ended (its end may be a boundary concern), even though they attended."""
    first = _group(client, ctx["peer"], ctx["f"]).json()["id"]
    assert _add(client, ctx["peer"], first, ctx["rec"].id).status_code == 200
    pairing_url = f"/v1/pairings/{ctx['pairing'].id}"
    assert client.post(f"{pairing_url}/pause", headers=ctx["h"],
                       json={"reason": "review"}).status_code == 200
    second = _group(client, ctx["peer"], ctx["f"]).json()["id"]
    assert _add(client, ctx["peer"], second, ctx["rec"].id).json()["code"] == "not_eligible"
    assert client.post(f"{pairing_url}/end", headers=ctx["h"],
                       json={"reason": "boundary_concern"}).status_code == 200
    assert _add(client, ctx["peer"], second, ctx["rec"].id).json()["code"] == "not_eligible"
    # Even if a coordinator once put them in the peer's group: only a new pairing, or the
    # coordinator adding them again, brings them back.
    assert _add(client, ctx["h"], second, ctx["rec"].id).status_code == 200
    third = _group(client, ctx["peer"], ctx["f"]).json()["id"]
    assert _add(client, ctx["peer"], third, ctx["rec"].id).json()["code"] == "not_eligible"


def test_a_peer_learns_only_not_eligible_and_cannot_tell_why(client, factory, ctx):
    """A keep-apart, a person the peer may not add, one who moved facility and an id that does
    not exist all read the same to the peer: never a 404 for one and 422 for another, never
    the keep-apart. The coordinator is told the reason."""
    gid = _group(client, ctx["peer"], ctx["f"]).json()["id"]
    enemy = factory.recipient(ctx["f"])
    assert _add(client, ctx["h"], gid, enemy.id).status_code == 200
    apart = factory.recipient(ctx["f"])
    factory.pairing(ctx["sup"], apart)  # the peer supports them too
    factory.keep_apart(apart, enemy)
    moved = factory.recipient(ctx["f"])
    factory.pairing(ctx["sup"], moved)
    elsewhere = factory.facility()
    with factory.engine.begin() as conn:
        conn.execute(update(Participant).where(Participant.id == moved.id)
                     .values(facility_id=elsewhere.id))
    staff = factory.participant(ctx["f"], "staff")
    answers = {
        "keep_apart": _add(client, ctx["peer"], gid, apart.id),
        "not_theirs": _add(client, ctx["peer"], gid, factory.recipient(ctx["f"]).id),
        "moved": _add(client, ctx["peer"], gid, moved.id),
        "other_network": _add(client, ctx["peer"], gid, staff.id),
        "no_such_id": _add(client, ctx["peer"], gid, uuid.uuid4()),
    }
    seen = {who: _refusal(r) for who, r in answers.items()}
    assert seen["keep_apart"][0] == 422 and seen["keep_apart"][1]["code"] == "not_eligible"
    assert all(v == seen["keep_apart"] for v in seen.values()), seen
    assert all("apart" not in r.text.lower() for r in answers.values())
    r = _add(client, ctx["h"], gid, apart.id)
    assert r.status_code == 422 and r.json()["code"] == "keep_apart"
    assert len(_add(client, ctx["peer"], gid, ctx["rec"].id).json()["attendees"]) == 3


# --- disclosures come from a session that was held ---------------------------------------------

@pytest.mark.parametrize("state", ["scheduled", "cancelled", "no_show"])
def test_no_disclosure_from_a_session_that_was_not_held(client, factory, ctx, state):
    s = _one_to_one(client, ctx["peer"], ctx["pairing"]).json()
    if state != "scheduled":
        path = {"cancelled": "cancel", "no_show": "no-show"}[state]
        assert client.post(f"/v1/support-sessions/{s['id']}/{path}", headers=ctx["peer"],
                           json={}).status_code == 200
    body = {"participant_id": str(ctx["rec"].id), "category": "suicide_risk",
            "passed_to": "On-call clinician", "passed_at": _when(0)}
    for who in ("peer", "h"):
        r = client.post(f"/v1/support-sessions/{s['id']}/disclosures", headers=ctx[who],
                        json=body)
        assert r.status_code == 409 and r.json()["code"] == "session_not_held", (who, r.text)
    assert factory.count(Disclosure) == 0 and factory.count(Escalation) == 0


def test_a_disclosure_from_a_completed_session_is_recorded(client, factory, ctx):
    s = _one_to_one(client, ctx["peer"], ctx["pairing"]).json()
    assert client.post(f"/v1/support-sessions/{s['id']}/complete", headers=ctx["peer"], json={
        "actual_start": _when(-1), "duration_minutes": 30}).status_code == 200
    r = client.post(f"/v1/support-sessions/{s['id']}/disclosures", headers=ctx["peer"], json={
        "participant_id": str(ctx["rec"].id), "category": "self_harm",
        "passed_to": "On-call clinician", "passed_at": _when(0)})
    assert r.status_code == 201 and r.json()["escalation_id"]
