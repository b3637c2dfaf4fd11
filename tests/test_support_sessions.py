"""Support sessions: scheduling and the workflow, group attendance with the keep-apart and
network checks, the confidential note (who may read it, audited, never leaked, encrypted at
rest), disclosures and their ledger, and a pairing's outcomes."""

import json
import logging
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import text

from app.models import AuditEvent, SupportSession
from app.models.common import Role
from app.services.support_sessions import SESSION_FLOW

NOTE = "He spoke about his daughter's visit and a plan for parole; feels hopeful"


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


def _one_to_one(client, ctx, headers=None):
    r = client.post("/v1/support-sessions", headers=headers or ctx["peer"], json={
        "kind": "one_to_one", "pairing_id": str(ctx["pairing"].id), "scheduled_at": _when()})
    assert r.status_code == 201, r.text
    return r.json()


def _complete(client, ctx, sid, headers=None, note=NOTE):
    body = {"actual_start": _when(-1), "duration_minutes": 45, "location": "Unit A dayroom",
            "topics": ["family", "reentry_planning"],
            "wellbeing": [{"participant_id": str(ctx["rec"].id), "before": 2, "after": 4}]}
    if note:
        body["note"] = note
    return client.post(f"/v1/support-sessions/{sid}/complete", headers=headers or ctx["peer"],
                       json=body)


def test_peer_schedules_and_completes_their_own_session(client, factory, ctx, caplog):
    caplog.set_level(logging.DEBUG)
    s = _one_to_one(client, ctx)
    assert {a["participant_id"] for a in s["attendees"]} == {str(ctx["sup"].id),
                                                             str(ctx["rec"].id)}
    r = _complete(client, ctx, s["id"])
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["status"] == "completed" and done["has_note"] is True
    assert NOTE not in r.text
    listed = client.get("/v1/support-sessions", headers=ctx["h"]).text
    assert s["id"] in listed and NOTE not in listed
    assert [e.type for e in factory.events()] == ["support_session.scheduled",
                                                  "support_session.completed"]
    assert all(NOTE not in str(e.data) for e in factory.events())
    assert NOTE not in caplog.text
    with factory.engine.connect() as conn:  # unreadable in the raw row
        raw = conn.execute(text("SELECT * FROM support_session")).one()
    assert NOTE.encode() not in b"".join(v if isinstance(v, bytes) else str(v).encode()
                                         for v in raw)


def test_note_visibility_for_every_role(client, factory, ctx):
    s = _one_to_one(client, ctx)
    assert _complete(client, ctx, s["id"]).status_code == 200
    url = f"/v1/support-sessions/{s['id']}/note"
    r = client.get(url, headers=ctx["peer"])
    assert r.status_code == 200 and r.json()["text"] == NOTE
    f = ctx["f"]
    clinician = factory.headers(factory.user(Role.clinician, [f]))
    expectations = {
        "coordinator": (ctx["h"], 404), "clinician_unlinked": (clinician, 404),
        "admin": (factory.headers(factory.user(Role.admin)), 403),
        "officer": (factory.headers(factory.user(Role.officer, [f])), 403),
        "auditor": (factory.headers(factory.user(Role.auditor)), 403),
        "other_peer": (factory.headers(factory.user(
            Role.peer_supporter, [f], participant=factory.certified_supporter(f))), 404),
    }
    for who, (h, status) in expectations.items():
        r = client.get(url, headers=h)
        assert r.status_code == status, who
        assert NOTE not in r.text, who
    # Linked to a disclosure, the clinician may read it.
    r = client.post(f"/v1/support-sessions/{s['id']}/disclosures", headers=ctx["peer"], json={
        "participant_id": str(ctx["rec"].id), "category": "suicide_risk",
        "passed_to": "On-call clinician", "passed_at": _when(0)})
    assert r.status_code == 201, r.text
    r = client.get(url, headers=clinician)
    assert r.status_code == 200 and r.json()["text"] == NOTE
    reads = [a for a in factory.audits("support_session.note_read")]
    assert [a.outcome for a in reads].count("success") == 2
    assert [a.outcome for a in reads].count("denied") == 3  # coordinator, clinician, other peer


def test_session_workflow_table_in_full(client, factory, ctx):
    for state in ("scheduled", "completed", "cancelled", "no_show"):
        for action, path in (("complete", "complete"), ("cancel", "cancel"),
                             ("no_show", "no-show")):
            s = _one_to_one(client, ctx)
            if state != "scheduled":
                first = {"completed": "complete", "cancelled": "cancel", "no_show": "no-show"}[state]
                if first == "complete":
                    assert _complete(client, ctx, s["id"], note=None).status_code == 200
                else:
                    assert client.post(f"/v1/support-sessions/{s['id']}/{first}",
                                       headers=ctx["peer"], json={}).status_code == 200
            if action == "complete":
                r = _complete(client, ctx, s["id"], note=None)
            else:
                r = client.post(f"/v1/support-sessions/{s['id']}/{path}", headers=ctx["peer"],
                                json={"reason": "x"})
            t = SESSION_FLOW[action]
            if state in t.sources:
                assert r.status_code == 200 and r.json()["status"] == t.target
            else:
                assert r.status_code == 409 and r.json()["code"] == "invalid_transition", \
                    (state, action)


def test_peer_confined_to_their_own(client, factory, ctx):
    other_pairing = factory.pairing(factory.certified_supporter(ctx["f"]),
                                    factory.recipient(ctx["f"]))
    r = client.post("/v1/support-sessions", headers=ctx["peer"], json={
        "kind": "one_to_one", "pairing_id": str(other_pairing.id), "scheduled_at": _when()})
    assert r.status_code == 404
    theirs = client.post("/v1/support-sessions", headers=ctx["h"], json={
        "kind": "one_to_one", "pairing_id": str(other_pairing.id), "scheduled_at": _when()}).json()
    assert client.get(f"/v1/support-sessions/{theirs['id']}", headers=ctx["peer"]).status_code \
        == 404
    assert client.post(f"/v1/support-sessions/{theirs['id']}/cancel", headers=ctx["peer"],
                       json={}).status_code == 404
    assert client.get("/v1/support-sessions", headers=ctx["peer"]).json()["items"] == []
    assert factory.get(SupportSession, __import__("uuid").UUID(theirs["id"])).status == \
        "scheduled"


def test_group_attendance_checks(client, factory, ctx):
    f = ctx["f"]
    r = client.post("/v1/support-sessions", headers=ctx["peer"], json={
        "kind": "group", "facility_id": str(f.id), "scheduled_at": _when()})
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    a, b = factory.recipient(f), factory.recipient(f)
    factory.keep_apart(a, b)
    url = f"/v1/support-sessions/{gid}/attendees"
    assert client.post(url, headers=ctx["h"], json={"participant_id": str(a.id)}).status_code == 200
    r = client.post(url, headers=ctx["h"], json={"participant_id": str(b.id)})
    assert r.status_code == 422 and r.json()["code"] == "keep_apart"
    r = client.post(url, headers=ctx["peer"], json={"participant_id": str(b.id)})
    assert r.status_code == 422 and r.json()["code"] == "not_eligible"  # b is not theirs to add
    staff = factory.participant(f, "staff")
    assert client.post(url, headers=ctx["h"], json={"participant_id": str(staff.id)}).status_code \
        == 404
    with factory.engine.begin() as conn:
        conn.execute(text("UPDATE facility SET settings = :s WHERE id = :i"),
                     {"s": '{"caseload_cap": 5, "group_size_limit": 2}', "i": f.id.hex
                      if factory.engine.dialect.name == "sqlite" else str(f.id)})
    r = client.post(url, headers=ctx["h"], json={"participant_id": str(factory.recipient(f).id)})
    assert r.status_code == 409 and r.json()["code"] == "group_full"


def test_peer_facilitator_sees_keep_apart_only_as_not_eligible(client, factory, ctx):
    f = ctx["f"]
    gid = client.post("/v1/support-sessions", headers=ctx["peer"], json={
        "kind": "group", "facility_id": str(f.id), "scheduled_at": _when()}).json()["id"]
    a = factory.recipient(f)
    factory.keep_apart(a, ctx["sup"])
    factory.pairing(ctx["sup"], a)  # the peer supports `a`, and may add them, but for this
    r = client.post(f"/v1/support-sessions/{gid}/attendees", headers=ctx["peer"],
                    json={"participant_id": str(a.id)})
    assert r.status_code == 422 and r.json()["code"] == "not_eligible"
    assert "keep" not in r.text.lower() and "apart" not in r.text.lower()
    # A coordinator adding `a` to the peer's group gets the reason.
    r = client.post(f"/v1/support-sessions/{gid}/attendees", headers=ctx["h"],
                    json={"participant_id": str(a.id)})
    assert r.status_code == 422 and r.json()["code"] == "keep_apart"


def test_peer_completing_a_group_is_told_only_not_eligible(client, factory, ctx):
    """Rule 3: a keep-apart opened after the group was filled stops its completion; the peer
    facilitator learns only that these people cannot meet, the coordinator why."""
    f = ctx["f"]
    gid = client.post("/v1/support-sessions", headers=ctx["peer"], json={
        "kind": "group", "facility_id": str(f.id), "scheduled_at": _when()}).json()["id"]
    a, b = factory.recipient(f), factory.recipient(f)
    for person in (a, b):
        r = client.post(f"/v1/support-sessions/{gid}/attendees", headers=ctx["h"],
                        json={"participant_id": str(person.id)})
        assert r.status_code in (200, 201), r.text
    factory.keep_apart(a, b)
    done = {"actual_start": _when(-1), "duration_minutes": 30}
    r = client.post(f"/v1/support-sessions/{gid}/complete", headers=ctx["peer"], json=done)
    assert r.status_code == 422 and r.json()["code"] == "not_eligible"
    assert "keep" not in r.text.lower() and "apart" not in r.text.lower()
    r = client.post(f"/v1/support-sessions/{gid}/complete", headers=ctx["h"], json=done)
    assert r.status_code == 422 and r.json()["code"] == "keep_apart"


def test_unknown_topics_refused_and_admins_extend(client, factory, ctx):
    s = _one_to_one(client, ctx)
    r = client.post(f"/v1/support-sessions/{s['id']}/complete", headers=ctx["peer"], json={
        "actual_start": _when(-1), "duration_minutes": 30, "topics": ["astrology"]})
    assert r.status_code == 422 and r.json()["code"] == "unknown_topic"
    assert "astrology" not in r.text  # named by position, never echoed
    assert r.json()["errors"][0]["field"] == "topics[0]"
    admin = factory.headers(factory.user(Role.admin))
    assert client.post("/v1/session-topics", headers=admin,
                       json={"code": "astrology", "label": "Astrology"}).status_code == 201
    r = client.post(f"/v1/support-sessions/{s['id']}/complete", headers=ctx["peer"], json={
        "actual_start": _when(-1), "duration_minutes": 30, "topics": ["astrology"]})
    assert r.status_code == 200


def test_disclosure_ledger_visibility(client, factory, ctx):
    s = _one_to_one(client, ctx)
    assert _complete(client, ctx, s["id"], note=None).status_code == 200
    r = client.post(f"/v1/support-sessions/{s['id']}/disclosures", headers=ctx["peer"], json={
        "participant_id": str(ctx["rec"].id), "category": "harm_to_others",
        "passed_to": "Shift supervisor", "passed_at": _when(0)})
    assert r.status_code == 201
    assert [e.type for e in factory.events()][-1] == "disclosure.recorded"
    url = f"/v1/participants/{ctx['rec'].id}/disclosures"
    for h in (ctx["peer"], ctx["h"], factory.headers(factory.user(Role.clinician, [ctx["f"]]))):
        r = client.get(url, headers=h)
        assert r.status_code == 200 and len(r.json()) == 1
    stranger = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]],
                                            participant=factory.certified_supporter(ctx["f"])))
    assert client.get(url, headers=stranger).status_code == 404
    other_facility = factory.headers(factory.user(Role.coordinator, [factory.facility()]))
    assert client.get(url, headers=other_facility).status_code == 404


def test_pairing_summary(client, factory, ctx):
    for _ in range(2):
        s = _one_to_one(client, ctx)
        assert _complete(client, ctx, s["id"], note=None).status_code == 200
    s = _one_to_one(client, ctx)
    client.post(f"/v1/support-sessions/{s['id']}/no-show", headers=ctx["peer"], json={})
    r = client.get(f"/v1/pairings/{ctx['pairing'].id}/summary", headers=ctx["h"])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["sessions_held"] == 2 and body["sessions_attended"] == 2
    assert body["average_wellbeing_change"] == 2.0
    assert body["days_since_last_session"] == 0


def test_note_read_and_denial_are_audit_rows_even_on_get(client, factory, ctx):
    s = _one_to_one(client, ctx)
    _complete(client, ctx, s["id"])
    before = factory.count(AuditEvent)
    client.get(f"/v1/support-sessions/{s['id']}/note", headers=ctx["h"])
    client.get(f"/v1/support-sessions/{s['id']}/note", headers=ctx["peer"])
    assert factory.count(AuditEvent) == before + 2


def test_note_key_rotation_rewraps_without_losing_notes(client, factory, ctx, settings, db_url):
    """A new master key becomes current; `peerlink notes rewrap` moves every note to it; the
    old key can then go, and the note still reads."""
    import base64
    import json
    import os
    import subprocess
    import sys

    s = _one_to_one(client, ctx)
    assert _complete(client, ctx, s["id"]).status_code == 200
    from app.security.notes import _dev_key

    old = base64.b64encode(_dev_key()).decode()
    new = base64.b64encode(os.urandom(32)).decode()
    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING",
           "PEERLINK_NOTE_KEYS": json.dumps({"dev": old, "k2": new}),
           "PEERLINK_NOTE_KEY_ID": "k2"}
    out = subprocess.run([sys.executable, "-m", "app.cli", "notes", "rewrap"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rewrapped": 1, "key_id": "k2"}
    from fastapi.testclient import TestClient
    from pydantic import SecretStr

    from app.main import create_app

    rotated = settings.model_copy(update={"note_keys": {"k2": SecretStr(new)},
                                          "note_key_id": "k2"})
    with TestClient(create_app(rotated)) as c:
        r = c.get(f"/v1/support-sessions/{s['id']}/note", headers=ctx["peer"])
    assert r.status_code == 200 and r.json()["text"] == NOTE


def test_sessions_rechecked_when_people_may_no_longer_meet(client, factory, ctx):
    s = _one_to_one(client, ctx)
    g = factory.support_session(facility=ctx["f"], facilitator=ctx["sup"])
    a, b = factory.recipient(ctx["f"]), factory.recipient(ctx["f"])
    for person in (a, b):
        assert client.post(f"/v1/support-sessions/{g.id}/attendees", headers=ctx["h"],
                           json={"participant_id": str(person.id)}).status_code == 200
    factory.keep_apart(a, b)  # imported behind the service's back after the group was set
    r = client.post(f"/v1/support-sessions/{g.id}/complete", headers=ctx["h"], json={
        "actual_start": _when(-1), "duration_minutes": 30})
    assert r.status_code == 422 and r.json()["code"] == "keep_apart"
    # A keep-apart between the pair ends the pairing and cancels its scheduled sessions.
    r = client.post("/v1/keep-apart-orders", headers=ctx["h"], json={
        "participant_ids": [str(ctx["sup"].id), str(ctx["rec"].id)], "reason": "threat",
        "scope": "facility", "authorised_by": "Lt. Diaz"})
    assert r.status_code == 201
    cancelled = client.get(f"/v1/support-sessions/{s['id']}", headers=ctx["h"]).json()
    assert cancelled["status"] == "cancelled" and cancelled["close_reason"] == "the pairing ended"
    r = _complete(client, ctx, s["id"])
    assert r.status_code == 409
    # The peer's ledger access ends with the pairing.
    assert client.get(f"/v1/participants/{ctx['rec'].id}/disclosures",
                      headers=ctx["peer"]).status_code == 404


def test_list_items_are_the_single_reads_field_for_field(client, factory, ctx):
    """The list reads plain rows with attendees aggregated by the database (JSON) and writes
    them without the read model; a single read builds and serialises the model. Both answer
    the same for every session: keys, their order, values and how they are written."""
    done = _one_to_one(client, ctx)
    assert _complete(client, ctx, done["id"]).status_code == 200
    cancelled = _one_to_one(client, ctx)
    client.post(f"/v1/support-sessions/{cancelled['id']}/cancel", headers=ctx["peer"],
                json={"reason": "Unit lockdown"})
    _one_to_one(client, ctx)  # scheduled, no note
    g = factory.support_session(facility=ctx["f"], facilitator=ctx["sup"])
    people = [factory.recipient(ctx["f"]) for _ in range(3)]
    for person in people:
        assert client.post(f"/v1/support-sessions/{g.id}/attendees", headers=ctx["h"],
                           json={"participant_id": str(person.id)}).status_code == 200
    r = client.post(f"/v1/support-sessions/{g.id}/complete", headers=ctx["h"], json={
        "actual_start": _when(-1), "duration_minutes": 60,
        "attendance": [{"participant_id": str(people[0].id), "status": "attended"},
                       {"participant_id": str(people[1].id), "status": "absent",
                        "reason": "Court date"}],
        "wellbeing": [{"participant_id": str(people[0].id), "before": 3, "after": 3}]})
    assert r.status_code == 200, r.text

    listed = client.get("/v1/support-sessions?limit=2", headers=ctx["h"]).json()
    items = listed["items"]
    rest = client.get(f"/v1/support-sessions?limit=2&cursor={listed['next_cursor']}",
                      headers=ctx["h"]).json()
    assert rest["next_cursor"] is None
    items += rest["items"]
    assert len(items) == 4 and [x["id"] for x in items] == sorted(x["id"] for x in items)
    for item in items:
        single = client.get(f"/v1/support-sessions/{item['id']}", headers=ctx["h"]).text
        assert json.dumps(item) == json.dumps(json.loads(single))  # keys, order, values
    group = next(x for x in items if x["kind"] == "group")
    assert [a["participant_id"] for a in group["attendees"]] == [
        str(p) for p in (ctx["sup"].id, *(x.id for x in people))]
    assert group["attendees"][2]["reason"] == "Court date"

    def ids(query, headers=None):
        r = client.get(f"/v1/support-sessions?{query}", headers=headers or ctx["h"])
        assert r.status_code == 200, r.text
        return {x["id"] for x in r.json()["items"]}

    assert ids(f"participant_id={people[1].id}") == {str(g.id)}
    assert ids(f"participant_id={ctx['rec'].id}&status=completed") == {done["id"]}
    assert ids(f"pairing_id={ctx['pairing'].id}&kind=one_to_one") == {
        x["id"] for x in items if x["kind"] == "one_to_one"}
    assert ids(f"facilitator_id={ctx['sup'].id}&kind=group") == {str(g.id)}
    assert ids("status=cancelled") == {cancelled["id"]}
    assert len(ids("limit=200", ctx["peer"])) == 4  # their pairing's sessions and their group
    other = factory.headers(factory.user(Role.coordinator, [factory.facility()]))
    assert ids(f"participant_id={ctx['rec'].id}", other) == set()


def test_attendance_rows_carry_their_sessions_place_and_time(client, factory, ctx):
    """Every way onto a list (a one-to-one's pair, a group's facilitator, an added attendee)
    writes the session's facility, network and scheduled time on the row (the program report
    reads a month's attendance by them)."""
    one = _one_to_one(client, ctx, ctx["h"])
    r = client.post("/v1/support-sessions", headers=ctx["peer"], json={
        "kind": "group", "facility_id": str(ctx["f"].id), "scheduled_at": _when(30)})
    assert r.status_code == 201, r.text
    gid = r.json()["id"]
    assert client.post(f"/v1/support-sessions/{gid}/attendees", headers=ctx["h"], json={
        "participant_id": str(factory.recipient(ctx["f"]).id)}).status_code == 200
    assert _complete(client, ctx, one["id"], ctx["h"], note=None).status_code == 200
    with factory.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT a.session_facility_id = s.facility_id, a.session_network = s.network, "
            "a.session_scheduled_at = s.scheduled_at FROM session_attendee a "
            "JOIN support_session s ON s.id = a.session_id")).all()
    assert len(rows) == 4
    assert all(all(r) for r in rows)
