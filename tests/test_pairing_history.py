"""A pairing's history: every transition with who (id and display name), when and why, behind
the pairing's own wall; a keep-apart behind a move and a coordinator's override reason never
told to a peer supporter."""

import uuid

import pytest

from app.models.common import Role


@pytest.fixture()
def ctx(factory):
    f = factory.facility("CCJ")
    g = factory.facility("NCF")
    coord = factory.user(Role.coordinator, [f], username="coord.ortiz")
    sup = factory.certified_supporter(f)
    peer = factory.user(Role.peer_supporter, [f], participant=sup)
    return {"f": f, "g": g, "coord": coord, "h": factory.headers(coord), "sup": sup,
            "rec": factory.recipient(f), "peer": factory.headers(peer)}


def _pairing(client, ctx, **kw):
    r = client.post("/v1/pairings", headers=ctx["h"], json={
        "supporter_id": str(ctx["sup"].id), "recipient_id": str(ctx["rec"].id), **kw})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _move(client, ctx, pid, action, body):
    r = client.post(f"/v1/pairings/{pid}/{action}", headers=ctx["h"], json=body)
    assert r.status_code == 200, r.text


def _history(client, headers, pid):
    return client.get(f"/v1/pairings/{pid}/history", headers=headers)


def test_every_transition_with_who_when_why(client, ctx):
    pid = _pairing(client, ctx)
    _move(client, ctx, pid, "activate", {})
    _move(client, ctx, pid, "pause", {"reason": "supporter on leave"})
    _move(client, ctx, pid, "resume", {"reason": "back from leave"})
    _move(client, ctx, pid, "end", {"reason": "completed", "note": "goals met"})
    r = _history(client, ctx["h"], pid)
    assert r.status_code == 200, r.text
    rows = r.json()
    assert [(e["action"], e["from_status"], e["to_status"]) for e in rows] == [
        ("propose", None, "proposed"), ("activate", "proposed", "active"),
        ("pause", "active", "paused"), ("resume", "paused", "active"),
        ("end", "active", "ended")]
    assert {e["by"] for e in rows} == {f"user:{ctx['coord'].id}"}
    assert {e["by_name"] for e in rows} == {"coord.ortiz"}
    assert [e["reason"] for e in rows] == [None, None, "supporter on leave", "back from leave",
                                           "goals met"]
    assert [e["end_reason"] for e in rows] == [None] * 4 + ["completed"]
    assert [e["at"] for e in rows] == sorted(e["at"] for e in rows)
    # The supporter reads the same history of their own pairing.
    assert [e["action"] for e in _history(client, ctx["peer"], pid).json()] == [
        e["action"] for e in rows]


def test_a_cascade_is_shown_as_system(client, ctx):
    pid = _pairing(client, ctx)
    _move(client, ctx, pid, "activate", {})
    r = client.post("/v1/keep-apart-orders", headers=ctx["h"], json={
        "participant_ids": [str(ctx["sup"].id), str(ctx["rec"].id)], "reason": "threat",
        "scope": "facility", "authorised_by": "Lt. Diaz", "external_source": None,
        "external_id": None})
    assert r.status_code == 201, r.text
    last = _history(client, ctx["h"], pid).json()[-1]
    assert (last["action"], last["by"], last["by_name"], last["end_reason"]) == (
        "end", "system", "system", "keep_apart")
    # The supporter is never told a keep-apart exists, nor why.
    r = _history(client, ctx["peer"], pid)
    assert r.status_code == 200 and "keep" not in r.text.lower()
    assert r.json()[-1]["end_reason"] == "other" and r.json()[-1]["reason"] is None


def test_a_keep_apart_pause_and_its_note_are_neutral_for_a_peer(client, ctx):
    pid = _pairing(client, ctx)
    _move(client, ctx, pid, "activate", {})
    _move(client, ctx, pid, "pause", {"reason": "keep_apart"})
    _move(client, ctx, pid, "end", {"reason": "keep_apart", "note": "order from the JMS"})
    coord = _history(client, ctx["h"], pid).json()
    assert [e["reason"] for e in coord[2:]] == ["keep_apart", "order from the JMS"]
    peer = _history(client, ctx["peer"], pid)
    assert "keep" not in peer.text.lower() and "JMS" not in peer.text
    assert [(e["reason"], e["end_reason"]) for e in peer.json()[2:]] == [
        ("not_possible", None), (None, "other")]


def test_an_override_reason_is_never_shown_to_a_peer(client, factory, ctx):
    factory.pairing(factory.certified_supporter(ctx["f"]), ctx["rec"])
    why = "Recipient asked for a second Spanish-speaking listener"
    pid = _pairing(client, ctx, override_reason=why)
    assert _history(client, ctx["h"], pid).json()[0]["reason"] == why
    peer = _history(client, ctx["peer"], pid)
    assert peer.status_code == 200 and why not in peer.text
    assert peer.json()[0]["reason"] is None


def test_same_wall_as_the_pairing(client, factory, ctx):
    pid = _pairing(client, ctx)
    unknown = _history(client, ctx["h"], uuid.uuid4())
    assert unknown.status_code == 404
    outsiders = [
        factory.user(Role.coordinator, [ctx["g"]]),              # another facility
        factory.user(Role.staff_coordinator, [ctx["f"]]),        # the other network
        factory.user(Role.peer_supporter, [ctx["f"]],            # not their pairing
                     participant=factory.certified_supporter(ctx["f"])),
    ]
    for account in outsiders:
        r = _history(client, factory.headers(account), pid)
        assert r.status_code == 404, account.role
        assert r.json()["code"] == unknown.json()["code"]
    # Without the scope to read pairings, nothing (a denied scope, not a hidden record).
    admin = factory.headers(factory.user(Role.admin))
    assert _history(client, admin, pid).status_code == 403
