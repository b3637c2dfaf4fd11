"""External ids are unique within one facility's records of one network, the walls a writer is
scoped by: an upsert of an id held outside the caller's scope answers exactly as one of an
unused id does (201, a record of the caller's own), so no answer tells the caller the id exists
elsewhere (it used to be 404 against 201)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.models import Participant, ParticipantExternalId
from app.models.common import Role

SHOWN_HEADERS = ("content-type", "location", "etag", "idempotent-replayed")


@pytest.fixture()
def world(factory) -> dict[str, Any]:
    a, b = factory.facility("AAA"), factory.facility("BBB")
    held = factory.participant(b, external=("jms", "HELD-1"))
    jms_a = factory.api_client(["participants:read", "participants:write"], [a])
    return {"a": a, "b": b, "held": held, "h": factory.headers(jms_a),
            "coord_all": factory.headers(factory.user(Role.coordinator))}


def _body() -> dict[str, Any]:
    return {"network": "incarcerated", "legal_name": "Ann Lee", "facility_code": "AAA"}


def _shape(value: Any) -> Any:
    """The shape of a JSON value: keys and types, not the values."""
    if isinstance(value, dict):
        return {k: _shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_shape(v) for v in value[:1]]
    return type(value).__name__


def _answer(r: Any) -> tuple[int, Any, dict[str, Any]]:
    headers = {k: r.headers.get(k) is not None for k in SHOWN_HEADERS}
    headers["location-form"] = (r.headers.get("location") or "").rsplit("/", 1)[0]
    return r.status_code, _shape(r.json()), headers


def test_an_id_held_elsewhere_answers_as_an_unused_one(client, factory, world):
    held = client.put("/v1/participants/by-external-id/jms/HELD-1", headers=world["h"],
                      json=_body())
    unused = client.put("/v1/participants/by-external-id/jms/NEVER-1", headers=world["h"],
                        json=_body())
    assert held.status_code == 201, held.text
    assert _answer(held) == _answer(unused)
    assert set(held.headers) == set(unused.headers)
    # A record of the caller's own, at its facility; the other facility's is untouched.
    assert held.json()["id"] != str(world["held"].id)
    assert held.json()["facility_id"] == str(world["a"].id)
    assert factory.get(Participant, world["held"].id).facility_id == world["b"].id
    # The next upsert of that id finds the caller's record (an update, never another create).
    again = client.put("/v1/participants/by-external-id/jms/HELD-1", headers=world["h"],
                       json=_body() | {"preferred_name": "Ann"})
    assert again.status_code == 200 and again.json()["id"] == held.json()["id"]


def test_one_facility_still_holds_an_id_once(client, factory, world):
    factory.participant(world["a"], external=("jms", "MINE-1"))
    r = client.post("/v1/participants", headers=world["h"] | {"Idempotency-Key": "k1"},
                    json=_body() | {"external_ids": [{"source": "jms", "value": "MINE-1"}]})
    assert r.status_code == 409 and r.json()["code"] == "external_id_taken"
    # ...and for the other facility's id, a create in the caller's scope succeeds as well.
    r = client.post("/v1/participants", headers=world["h"] | {"Idempotency-Key": "k2"},
                    json=_body() | {"external_ids": [{"source": "jms", "value": "HELD-1"}]})
    assert r.status_code == 201, r.text


def test_the_id_moves_with_a_transfer_and_two_holders_merge_into_one(client, factory, world):
    mine = client.put("/v1/participants/by-external-id/jms/HELD-1", headers=world["h"],
                      json=_body()).json()
    # A coordinator of every facility sees both records holding the id, and merges them.
    h = world["coord_all"]
    held = world["held"]
    r = client.post(f"/v1/participants/{held.id}/merge", headers=h | {"Idempotency-Key": "m1"},
                    json={"duplicate_id": mine["id"]})
    assert r.status_code == 200, r.text
    assert r.json()["external_ids"] == [{"source": "jms", "value": "HELD-1"}]
    assert factory.count(ParticipantExternalId, ParticipantExternalId.value == "HELD-1") == 1
    # A transfer moves the id with the person: the old facility may then reuse it.
    r = client.patch(f"/v1/participants/{held.id}", headers=h | {"If-Match": r.headers["etag"]},
                     json={"facility_code": "AAA"})
    assert r.status_code == 200, r.text
    with factory.engine.connect() as conn:
        from sqlalchemy import select
        row = conn.execute(select(ParticipantExternalId.facility_id).where(
            ParticipantExternalId.value == "HELD-1")).one()
    assert row.facility_id == world["a"].id


def test_a_raise_by_an_id_two_facilities_hold_finds_the_one_at_its_place(client, factory,
                                                                         world):
    at_a = factory.participant(world["a"], external=("jms", "HELD-1"))
    officer = factory.headers(factory.user(Role.officer, [world["a"]]))
    r = client.post("/v1/escalations", headers=officer | {"Idempotency-Key": str(uuid.uuid4())},
                    json={"external_id": {"source": "jms", "value": "HELD-1"},
                          "category": "suicide_risk", "tier": "high", "description": "Said goodbye"})
    assert r.status_code == 201, r.text
    assert r.json()["participant_id"] == str(at_a.id)
