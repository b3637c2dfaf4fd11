"""Participants: create, read, list with filters and cursors, PATCH with If-Match, the
idempotent JMS upsert, custody events, merge and archive."""

from datetime import UTC, datetime, timedelta

import pytest

from app.models import AuditEvent, KeepApartOrder, OutboxEvent, Participant, User
from app.models.common import Role


@pytest.fixture()
def world(factory):
    f = factory.facility("CCJ")
    a1, b2 = factory.unit(f, "A1"), factory.unit(f, "B2")
    g = factory.facility("NCF")
    factory.unit(g, "C3")
    coord = factory.user(Role.coordinator, [f, g])
    return {"f": f, "g": g, "a1": a1, "b2": b2, "coord": coord, "h": factory.headers(coord)}


def _body(**kw):
    base = {"network": "incarcerated", "legal_name": "Sam Roe", "facility_code": "CCJ",
            "housing_unit_code": "A1", "program_roles": ["recipient"]}
    return base | kw


def test_create_read_and_etag(client, factory, world):
    r = client.post("/v1/participants", headers=world["h"],
                    json=_body(external_ids=[{"source": "jms", "value": "P-1"}]))
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["etag"] == '"1"' and r.headers["location"].endswith(body["id"])
    assert body["custody_status"] == "in_custody"
    assert body["housing_unit_id"] == str(world["a1"].id)
    got = client.get(f"/v1/participants/{body['id']}", headers=world["h"])
    assert got.status_code == 200 and got.json() == body
    assert [e.type for e in factory.events()] == ["participant.created"]
    event = factory.events()[0]
    assert "Sam" not in str(event.data)  # events are thin: no names
    assert factory.audits("participant.create")[0].entity_id == body["id"]


def test_patch_with_if_match_and_412(client, factory, world):
    p = factory.participant(world["f"])
    url = f"/v1/participants/{p.id}"
    r = client.patch(url, headers=world["h"] | {"If-Match": '"1"'},
                     json={"preferred_name": "Sammy"})
    assert r.status_code == 200 and r.json()["version"] == 2 and r.headers["etag"] == '"2"'
    stale = client.patch(url, headers=world["h"] | {"If-Match": '"1"'},
                         json={"preferred_name": "Other"})
    assert stale.status_code == 412 and stale.json()["code"] == "version_mismatch"
    assert factory.get(Participant, p.id).preferred_name == "Sammy"


def test_housing_move_release_and_transfer_emit_events(client, factory, world):
    p = factory.participant(world["f"], housing_unit_id=world["a1"].id)
    url = f"/v1/participants/{p.id}"
    assert client.patch(url, headers=world["h"], json={"housing_unit_code": "B2"}).status_code == 200
    assert client.patch(url, headers=world["h"], json={"facility_code": "NCF"}).status_code == 200
    moved = factory.get(Participant, p.id)
    assert moved.facility_id == world["g"].id and moved.housing_unit_id is None
    assert client.patch(url, headers=world["h"],
                        json={"custody_status": "released"}).status_code == 200
    types = [e.type for e in factory.events()]
    assert types == ["participant.updated", "participant.transferred", "participant.updated",
                     "participant.released", "participant.updated"]
    housing = factory.events("participant.updated")[0]
    assert housing.data == {"changed": ["housing_unit_id"]}


def test_unit_of_another_facility_is_refused(client, factory, world):
    p = factory.participant(world["f"])
    r = client.patch(f"/v1/participants/{p.id}", headers=world["h"],
                     json={"housing_unit_code": "C3"})
    assert r.status_code == 422 and r.json()["code"] == "unknown_housing_unit"
    assert factory.get(Participant, p.id).version == 1


def test_upsert_is_idempotent(client, factory, world):
    url = "/v1/participants/by-external-id/jms/J-77"
    first = client.put(url, headers=world["h"], json=_body())
    assert first.status_code == 201, first.text
    assert first.json()["external_ids"] == [{"source": "jms", "value": "J-77"}]
    n_events, n_audit = len(factory.events()), factory.count(AuditEvent)
    again = client.put(url, headers=world["h"], json=_body())
    assert again.status_code == 200 and again.json() == first.json()
    assert len(factory.events()) == n_events and factory.count(AuditEvent) == n_audit
    moved = client.put(url, headers=world["h"], json=_body(housing_unit_code="B2"))
    assert moved.status_code == 200 and moved.json()["version"] == 2
    released = client.put(url, headers=world["h"],
                          json=_body(housing_unit_code="B2", custody_status="released"))
    assert released.json()["custody_status"] == "released"
    assert [e.type for e in factory.events()][-2:] == ["participant.released",
                                                       "participant.updated"]
    assert factory.count(Participant) == 1


def test_upsert_refuses_network_change(client, factory, world):
    url = "/v1/participants/by-external-id/jms/J-1"
    assert client.put(url, headers=world["h"], json=_body()).status_code == 201
    staff = factory.user(Role.staff_coordinator)
    r = client.put(url, headers=factory.headers(staff),
                   json=_body(network="staff", employment_status="employed",
                              housing_unit_code=None, program_roles=[]))
    # The record is invisible to a staff coordinator: it does not exist for them, and the id
    # is theirs to use within their network's records (a record of their own).
    assert r.status_code == 201 and r.json()["network"] == "staff"
    r = client.put(url, headers=world["h"], json=_body(network="staff"))
    assert r.status_code == 422


def test_duplicate_external_id_is_409(client, factory, world):
    factory.participant(world["f"], external=("jms", "X-1"))
    r = client.post("/v1/participants", headers=world["h"],
                    json=_body(external_ids=[{"source": "jms", "value": "X-1"}]))
    assert r.status_code == 409 and r.json()["code"] == "external_id_taken"
    assert factory.count(Participant) == 1


def test_list_filters_and_cursor_walk(client, factory, world):
    people = [factory.participant(world["f"], housing_unit_id=world["a1"].id,
                                  legal_name=f"Alex {i}", is_recipient=True) for i in range(5)]
    factory.participant(world["f"], legal_name="Blake Supporter", is_supporter=True,
                        supporter_availability="active")
    factory.participant(world["g"], legal_name="Casey Elsewhere", custody_status="released")
    seen, cursor = [], None
    while True:
        params = {"limit": 2, "facility_id": str(world["f"].id)} | (
            {"cursor": cursor} if cursor else {})
        page = client.get("/v1/participants", headers=world["h"], params=params).json()
        seen += [p["id"] for p in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert len(seen) == 6 == len(set(seen)) and seen == sorted(seen)

    def ids(**params):
        r = client.get("/v1/participants", headers=world["h"], params=params)
        assert r.status_code == 200, r.text
        return {p["id"] for p in r.json()["items"]}

    assert ids(q="alex") == {str(p.id) for p in people}
    assert len(ids(q="supp")) == 1
    assert len(ids(program_role="supporter")) == 1
    assert len(ids(custody_status="released")) == 1
    assert ids(housing_unit_id=str(world["a1"].id)) == {str(p.id) for p in people}
    assert ids(q="100%") == set()  # wildcards are matched literally
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert ids(updated_since=future) == set()
    assert len(ids(updated_since="2000-01-01T00:00:00Z")) == 7


def test_archive_hides_from_default_list(client, factory, world):
    p = factory.participant(world["f"])
    r = client.post(f"/v1/participants/{p.id}/archive", headers=world["h"])
    assert r.status_code == 200 and r.json()["archived"] is True
    listed = client.get("/v1/participants", headers=world["h"]).json()["items"]
    assert listed == []
    listed = client.get("/v1/participants", headers=world["h"],
                        params={"include_archived": "true"}).json()["items"]
    assert [x["id"] for x in listed] == [str(p.id)]
    assert client.delete(f"/v1/participants/{p.id}", headers=world["h"]).status_code == 405


def test_merge_moves_ids_orders_and_accounts(client, factory, world):
    keep = factory.participant(world["f"], external=("jms", "K-1"), is_supporter=True)
    dup = factory.participant(world["f"], external=("booking", "B-9"), is_supporter=True)
    other = factory.participant(world["f"])
    both = factory.keep_apart(keep, dup)
    order = factory.keep_apart(dup, other)
    peer = factory.user(Role.peer_supporter, [world["f"]], participant=dup)
    r = client.post(f"/v1/participants/{keep.id}/merge", headers=world["h"],
                    json={"duplicate_id": str(dup.id)})
    assert r.status_code == 200, r.text
    assert {(e["source"], e["value"]) for e in r.json()["external_ids"]} == {
        ("jms", "K-1"), ("booking", "B-9")}
    gone = factory.get(Participant, dup.id)
    assert gone.merged_into_id == keep.id and gone.archived_at is not None
    moved = factory.get(KeepApartOrder, order.id)
    assert {moved.participant_a_id, moved.participant_b_id} == {keep.id, other.id}
    closed = factory.get(KeepApartOrder, both.id)
    assert closed.status == "closed" and closed.version == both.version + 1  # a fresh ETag
    assert factory.count(OutboxEvent, OutboxEvent.type == "keep_apart.closed") == 1
    assert factory.get(User, peer.id).participant_id == keep.id
    assert factory.count(OutboxEvent, OutboxEvent.type == "participant.merged") == 1
    # The upsert by the duplicate's old id now finds the survivor.
    r = client.put("/v1/participants/by-external-id/booking/B-9", headers=world["h"],
                   json=_body(program_roles=["supporter"]))
    assert r.status_code == 200 and r.json()["id"] == str(keep.id)


def test_merge_refuses_self_and_cross_network(client, factory, world):
    a = factory.participant(world["f"])
    s = factory.participant(world["f"], network="staff")
    r = client.post(f"/v1/participants/{a.id}/merge", headers=world["h"],
                    json={"duplicate_id": str(a.id)})
    assert r.status_code == 422 and r.json()["code"] == "merge_self"
    # A staff record is invisible to a coordinator: not found, not "wrong network".
    r = client.post(f"/v1/participants/{a.id}/merge", headers=world["h"],
                    json={"duplicate_id": str(s.id)})
    assert r.status_code == 404
