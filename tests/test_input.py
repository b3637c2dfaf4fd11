"""Bad input of every kind gets a clear problem+json answer and changes nothing."""

import pytest

from app.models import AuditEvent, Facility, Participant
from app.models.common import Role

PROBLEM = "application/problem+json"


@pytest.fixture()
def ctx(factory):
    f = factory.facility("CCJ")
    coord = factory.user(Role.coordinator, [f])
    admin = factory.user(Role.admin)
    return {"f": f, "h": factory.headers(coord), "admin": factory.headers(admin)}


def _valid():
    return {"network": "incarcerated", "legal_name": "Jo Poe", "facility_code": "CCJ"}


def _assert_problem(r, status, code):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["code"] == code
    assert {"type", "title", "detail", "request_id"} <= set(body)
    return body


@pytest.mark.parametrize("extra", [{"id": "01a222f5-0000-7000-8000-000000000000"},
                                   {"version": 99}, {"archived_at": "2020-01-01T00:00:00Z"},
                                   {"merged_into_id": None}, {"is_admin": True}])
def test_mass_assignment_is_refused(client, factory, ctx, extra):
    r = client.post("/v1/participants", headers=ctx["h"], json=_valid() | extra)
    body = _assert_problem(r, 422, "validation_error")
    assert body["errors"][0]["message"] == "unknown field"
    assert factory.count(Participant) == 0


def test_wrong_types_never_echo_the_value(client, factory, ctx):
    secret = "SSN-123-45-6789"
    r = client.post("/v1/participants", headers=ctx["h"],
                    json=_valid() | {"date_of_birth": secret, "languages": secret})
    body = _assert_problem(r, 422, "validation_error")
    assert secret not in r.text
    assert {e["field"] for e in body["errors"]} >= {"date_of_birth", "languages"}
    assert factory.count(Participant) == 0


def test_bad_uuid_in_path_and_query(client, ctx):
    r = client.get("/v1/participants/not-a-uuid", headers=ctx["h"])
    body = _assert_problem(r, 422, "validation_error")
    assert "not-a-uuid" not in r.text and body["errors"][0]["field"] == "path.participant_id"
    _assert_problem(client.get("/v1/participants", headers=ctx["h"],
                               params={"facility_id": "zzz"}), 422, "validation_error")


@pytest.mark.parametrize("cursor", ["garbage", "eyJrIjoidXNlciIsInYiOiIxIn0", "%%%", "a" * 600])
def test_bad_cursor(client, ctx, cursor):
    r = client.get("/v1/participants", headers=ctx["h"], params={"cursor": cursor})
    assert r.status_code == 422 and r.headers["content-type"].startswith(PROBLEM)


def test_limit_is_capped(client, ctx):
    _assert_problem(client.get("/v1/participants", headers=ctx["h"], params={"limit": 201}),
                    422, "validation_error")
    _assert_problem(client.get("/v1/participants", headers=ctx["h"], params={"limit": 0}),
                    422, "validation_error")


def test_oversized_body_is_413(client, factory, ctx):
    r = client.post("/v1/participants", headers=ctx["h"],
                    json=_valid() | {"legal_name": "x" * 1_100_000})
    _assert_problem(r, 413, "payload_too_large")
    assert factory.count(Participant) == 0


def test_non_json_body_is_415(client, factory, ctx):
    r = client.post("/v1/participants", headers=ctx["h"] | {"Content-Type": "text/plain"},
                    content=b'{"network": "incarcerated"}')
    _assert_problem(r, 415, "unsupported_media_type")


def test_malformed_json_is_422(client, ctx):
    r = client.post("/v1/participants", headers=ctx["h"] | {"Content-Type": "application/json"},
                    content=b'{"network": ')
    _assert_problem(r, 422, "validation_error")


def test_unknown_route_and_method(client, ctx):
    _assert_problem(client.get("/v1/nothing-here", headers=ctx["h"]), 404, "not_found")
    _assert_problem(client.put("/v1/participants", headers=ctx["h"], json={}), 405,
                    "method_not_allowed")


def test_conflict_changes_nothing(client, factory, ctx):
    r = client.post("/v1/facilities", headers=ctx["admin"],
                    json={"code": "CCJ", "name": "Again", "timezone": "UTC"})
    _assert_problem(r, 409, "facility_code_taken")
    assert factory.count(Facility) == 1
    assert factory.count(AuditEvent, AuditEvent.action == "facility.create") == 0


def test_invalid_facility_settings(client, factory, ctx):
    r = client.post("/v1/facilities", headers=ctx["admin"], json={
        "code": "NEW", "name": "New", "timezone": "Mars/Olympus",
        "settings": {"caseload_cap": 0, "ack_minutes": {"urgent": 3}}})
    body = _assert_problem(r, 422, "validation_error")
    assert {e["field"] for e in body["errors"]} == {
        "timezone", "settings.caseload_cap", "settings.ack_minutes"}
    assert factory.count(Facility) == 1


def test_server_error_hides_exception_text(app, factory, ctx):
    from fastapi.testclient import TestClient

    @app.get("/boom-test")
    async def boom() -> None:
        raise RuntimeError("secret internals: password=hunter2")

    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/boom-test")
    body = _assert_problem(r, 500, "internal_error")
    assert "hunter2" not in r.text and "RuntimeError" not in body["detail"]


def test_explicit_null_for_a_required_field_is_422(client, factory, ctx):
    p = factory.participant(ctx["f"], legal_name="Kept Name")
    r = client.patch(f"/v1/participants/{p.id}", headers=ctx["h"], json={"legal_name": None})
    _assert_problem(r, 422, "validation_error")
    assert "Kept Name" not in r.text
    assert factory.get(Participant, p.id).legal_name == "Kept Name"


def test_timestamps_without_offset_are_422(client, ctx):
    for path, param in (("/v1/participants", "updated_since"), ("/v1/audit-events", "since")):
        headers = ctx["admin"] if "audit" in path else ctx["h"]
        r = client.get(path, headers=headers, params={param: "2024-01-01T00:00:00"})
        _assert_problem(r, 422, "validation_error")


def test_upsert_with_null_statuses_stays_idempotent(client, factory, ctx):
    url = "/v1/participants/by-external-id/jms/N-1"
    body = _valid() | {"custody_status": None, "supporter_availability": None}
    assert client.put(url, headers=ctx["h"], json=body).status_code == 201
    for _ in range(2):
        r = client.put(url, headers=ctx["h"], json=body)
        assert r.status_code == 200 and r.json()["version"] == 1
        assert r.json()["custody_status"] == "in_custody"


def test_chunked_oversized_body_is_413(client, factory, ctx):
    def chunks():
        yield b'{"network": "incarcerated", "legal_name": "'
        for _ in range(1200):
            yield b"x" * 1000
        yield b'", "facility_code": "CCJ"}'

    r = client.post("/v1/participants", headers=ctx["h"] | {"Content-Type": "application/json"},
                    content=chunks())
    _assert_problem(r, 413, "payload_too_large")
    assert factory.count(Participant) == 0
