"""BOLA for the training and pairing routes: a record outside the caller's facilities or
network is a 404 (the same as a missing one), never readable, never movable, never listed."""

import uuid

import pytest

from app.models import Enrollment, Pairing, SupportSession
from app.models.common import Role


@pytest.fixture()
def world(factory):
    a, b = factory.facility("BA"), factory.facility("BB")
    course = factory.course(required=False)
    w = {"a": a, "b": b, "course": course}
    for fac, name in ((a, "A"), (b, "B")):
        sup = factory.certified_supporter(fac)
        w[f"pair{name}"] = factory.pairing(sup, factory.recipient(fac))
        w[f"enr{name}"] = factory.enrollment(sup, course)
        w[f"sup{name}"] = sup
    staff_sup = factory.certified_supporter(a, "staff", employment_status="employed")
    w["pairS"] = factory.pairing(staff_sup, factory.recipient(a, "staff",
                                                              employment_status="employed"))
    w["enrS"] = factory.enrollment(staff_sup, course)
    return w


def _actors(factory, w):
    a = w["a"]
    return {
        "coordinator_of_A": (factory.headers(factory.user(Role.coordinator, [a])),
                             {"pairA", "enrA"}),
        "staff_coordinator_of_A": (factory.headers(factory.user(Role.staff_coordinator, [a])),
                                   {"pairS", "enrS"}),
        "peer_supporter_A": (factory.headers(factory.user(Role.peer_supporter, [a],
                                                          participant=w["supA"])),
                             {"pairA", "enrA"}),
        "client_of_A": (factory.headers(factory.api_client(["pairings:read"], [a])), {"pairA"}),
    }


def test_lists_show_only_what_the_caller_may_see(client, factory, world):
    for name, (h, visible) in _actors(factory, world).items():
        r = client.get("/v1/pairings", headers=h)
        assert r.status_code == 200, name
        want = {str(world[k].id) for k in visible if k.startswith("pair")}
        assert {p["id"] for p in r.json()["items"]} == want, name
        r = client.get("/v1/enrollments", headers=h,
                       params={"course_id": str(world["course"].id)})
        if r.status_code == 200:
            want = {str(world[k].id) for k in visible if k.startswith("enr")}
            assert {e["id"] for e in r.json()["items"]} == want, name


def test_hidden_records_are_404_like_missing_ones_and_unchanged(client, factory, world):
    for name, (h, visible) in _actors(factory, world).items():
        for key in ("pairA", "pairB", "pairS", "enrA", "enrB", "enrS"):
            if key in visible:
                continue
            kind = "pairings" if key.startswith("pair") else "enrollments"
            rid = world[key].id
            for method, path, body in (
                    ("GET", f"/v1/{kind}/{rid}", None),
                    ("GET", f"/v1/{kind}/{rid}/history" if kind == "pairings"
                     else f"/v1/{kind}/{rid}", None),
                    ("POST", f"/v1/{kind}/{rid}/pause" if kind == "pairings"
                     else f"/v1/{kind}/{rid}/start", {})):
                hidden = client.request(method, path, headers=h, json=body)
                missing = client.request(method, path.replace(str(rid), str(uuid.uuid4())),
                                         headers=h, json=body)
                assert hidden.status_code == missing.status_code, (name, path)
                if hidden.status_code == 404:
                    strip = lambda r: {k: v for k, v in r.json().items() if k != "request_id"}  # noqa: E731
                    assert strip(hidden) == strip(missing)
                else:  # a caller without the write scope never gets that far
                    assert hidden.status_code == 403, (name, path, hidden.text)
    assert factory.get(Pairing, world["pairA"].id).status == "active"
    assert factory.get(Pairing, world["pairB"].id).status == "active"
    assert factory.get(Enrollment, world["enrB"].id).status == "enrolled"


def test_no_pairing_or_enrollment_across_the_walls(client, factory, world):
    h = factory.headers(factory.user(Role.coordinator, [world["a"]]))
    other = factory.recipient(world["b"])
    r = client.post("/v1/pairings", headers=h, json={
        "supporter_id": str(world["supA"].id), "recipient_id": str(other.id)})
    assert r.status_code == 404
    r = client.post("/v1/enrollments", headers=h, json={
        "participant_id": str(world["supB"].id), "course_id": str(factory.course().id)})
    assert r.status_code == 404
    r = client.get("/v1/pairings/candidates", headers=h,
                   params={"recipient_id": str(other.id)})
    assert r.status_code == 404
    r = client.get(f"/v1/participants/{world['supB'].id}/certification", headers=h)
    assert r.status_code == 404
    assert factory.count(Pairing) == 3


def test_sessions_notes_and_disclosures_stay_behind_the_walls(client, factory, world):
    sessions = {k: factory.support_session(world[f"pair{k}"]) for k in ("A", "B", "S")}
    for name, (h, visible) in _actors(factory, world).items():
        r = client.get("/v1/support-sessions", headers=h)
        if r.status_code == 403:
            continue  # no sessions:read (the integration client)
        seen = {x["id"] for x in r.json()["items"]}
        want = {str(sessions[k].id) for k in "ABS" if f"pair{k}" in visible}
        assert seen == want, name
        for k, s in sessions.items():
            if f"pair{k}" in visible:
                continue
            for method, path, body in (
                    ("GET", f"/v1/support-sessions/{s.id}", None),
                    ("POST", f"/v1/support-sessions/{s.id}/cancel", {}),
                    ("POST", f"/v1/support-sessions/{s.id}/disclosures", {
                        "participant_id": str(world[f"pair{k}"].recipient_id),
                        "category": "abuse", "passed_to": "x",
                        "passed_at": "2030-01-01T00:00:00Z"}),
                    ("GET", f"/v1/support-sessions/{s.id}/note", None)):
                r = client.request(method, path, headers=h, json=body)
                assert r.status_code == 404, (name, path, r.status_code)
    assert {factory.get(SupportSession, s.id).status for s in sessions.values()} == {"scheduled"}
