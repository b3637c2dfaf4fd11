"""Participants: create, read, list, update with ETag, and the custody events."""

from app.models.common import Role


def test_coordinator_creates_and_reads_participant(client, factory):
    f = factory.facility("CCJ")
    factory.unit(f, "A1")
    coord = factory.user(Role.coordinator, [f])
    h = factory.headers(coord)
    r = client.post("/v1/participants", headers=h, json={
        "network": "incarcerated", "legal_name": "Sam Roe", "facility_code": "CCJ",
        "housing_unit_code": "A1", "program_roles": ["recipient"],
        "external_ids": [{"source": "jms", "value": "P-1"}]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["etag"] == '"1"'
    assert body["custody_status"] == "in_custody"
    r = client.get(f"/v1/participants/{body['id']}", headers=h)
    assert r.status_code == 200
    assert r.json()["external_ids"] == [{"source": "jms", "value": "P-1"}]
    assert [e.type for e in factory.events()] == ["participant.created"]
