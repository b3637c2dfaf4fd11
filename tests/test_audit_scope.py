"""An auditor sees the audit rows of their facilities only: every row about a record carries
that record's facility and network (a refused read of another facility's record, an import job,
a refused note read, a write), and a row that names no facility is shown to auditors of all
facilities only."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from app.models.common import Role

CSV = b"external_source,external_id,network,legal_name,facility_code\r\njms,I-1,incarcerated,Ann Lee,AAA\r\n"


@pytest.fixture()
def world(factory) -> dict[str, Any]:
    a, b = factory.facility("AAA"), factory.facility("BBB")
    return {"a": a, "b": b,
            "auditor_a": factory.headers(factory.user(Role.auditor, [a])),
            "auditor_b": factory.headers(factory.user(Role.auditor, [b])),
            "auditor_all": factory.headers(factory.user(Role.auditor))}


def _rows(client: Any, headers: dict[str, str], **params: str) -> list[dict[str, Any]]:
    """Every audit row the caller sees (all pages)."""
    out, cursor = [], None
    while True:
        r = client.get("/v1/audit-events", headers=headers,
                       params=params | {"limit": "200"} | ({"cursor": cursor} if cursor else {}))
        assert r.status_code == 200, r.text
        out += r.json()["items"]
        cursor = r.json()["next_cursor"]
        if not cursor:
            return out


def _about(client: Any, headers: dict[str, str], entity_id: str) -> list[dict[str, Any]]:
    return [row for row in _rows(client, headers) if row["entity_id"] == entity_id]


def _seen_only_by_a(client: Any, w: dict[str, Any], entity_id: str) -> dict[str, Any]:
    """The rows about `entity_id`: stamped with A, seen by A's auditor and the auditor of all
    facilities, never by B's. Returns A's auditor's row."""
    mine = _about(client, w["auditor_a"], entity_id)
    assert mine, "the row was not written, or A's auditor cannot see it"
    assert {row["facility_id"] for row in mine} == {str(w["a"].id)}
    assert {row["network"] for row in mine} == {"incarcerated"}
    assert _about(client, w["auditor_b"], entity_id) == []
    assert len(_about(client, w["auditor_all"], entity_id)) == len(mine)
    return mine[-1]


@pytest.mark.parametrize("method, path", [
    ("GET", "/v1/participants/{p}"),
    ("PATCH", "/v1/participants/{p}"),
    ("GET", "/v1/escalations/{e}"),
    ("GET", "/v1/pairings/{pr}"),
    ("GET", "/v1/support-sessions/{s}"),
])
def test_a_refused_read_of_another_facilitys_record_is_stamped_with_its_facility(
        client, factory, world, method, path):
    p = factory.participant(world["a"])
    sup, rec = factory.certified_supporter(world["a"]), factory.recipient(world["a"])
    pairing = factory.pairing(sup, rec)
    ids = {"p": p.id, "e": factory.escalation(p).id, "pr": pairing.id,
           "s": factory.support_session(pairing).id}
    target = path.format(**ids)
    b_coord = factory.headers(factory.user(Role.coordinator, [world["b"]]))
    r = client.request(method, target, headers=b_coord,
                       json={"preferred_name": "X"} if method == "PATCH" else None)
    assert r.status_code == 404
    record_id = target.rsplit("/", 1)[1]
    row = _seen_only_by_a(client, world, record_id)
    assert row["outcome"] == "not_found"


def test_a_refused_archive_by_another_facilitys_record_is_stamped(client, factory, world):
    """A write refused as not found (POST): the same stamp as a read."""
    p = factory.participant(world["a"])
    b_coord = factory.headers(factory.user(Role.coordinator, [world["b"]]))
    r = client.post(f"/v1/participants/{p.id}/archive",
                    headers=b_coord | {"Idempotency-Key": str(uuid.uuid4())})
    assert r.status_code == 404
    _seen_only_by_a(client, world, str(p.id))


def test_an_import_job_is_stamped_with_its_callers_facility(client, factory, world):
    a_coord = factory.headers(factory.user(Role.coordinator, [world["a"]]))
    r = client.post("/v1/imports/participants",
                    headers=a_coord | {"Content-Type": "text/csv",
                                       "Idempotency-Key": str(uuid.uuid4())},
                    content=CSV)
    assert r.status_code in (200, 201, 202), r.text
    job_id = r.json()["id"]
    row = _seen_only_by_a(client, world, job_id)
    assert row["action"] == "import.participants"


def test_an_import_job_of_a_caller_of_every_facility_is_for_auditors_of_all(client, factory,
                                                                            world):
    coord = factory.headers(factory.user(Role.coordinator))
    r = client.post("/v1/imports/participants",
                    headers=coord | {"Content-Type": "text/csv",
                                     "Idempotency-Key": str(uuid.uuid4())},
                    content=CSV)
    assert r.status_code in (200, 201, 202), r.text
    job_id = r.json()["id"]
    assert _about(client, world["auditor_a"], job_id) == []
    assert _about(client, world["auditor_b"], job_id) == []
    assert [row["facility_id"] for row in _about(client, world["auditor_all"], job_id)] == [None]


def test_a_refused_note_read_of_another_facilitys_session_is_stamped(client, factory, world):
    pairing = factory.pairing(factory.certified_supporter(world["a"]),
                              factory.recipient(world["a"]))
    s = factory.support_session(pairing)
    clinician_b = factory.headers(factory.user(Role.clinician, [world["b"]]))
    r = client.get(f"/v1/support-sessions/{s.id}/note", headers=clinician_b)
    assert r.status_code == 404
    row = _seen_only_by_a(client, world, str(s.id))
    assert row["action"] == "support_session.note_read" and row["outcome"] == "denied"


def test_a_write_is_stamped_with_its_records_facility_and_network(client, factory, world):
    a_coord = factory.headers(factory.user(Role.coordinator, [world["a"]]))
    r = client.post("/v1/participants", headers=a_coord | {"Idempotency-Key": "w1"},
                    json={"network": "incarcerated", "legal_name": "Ann Lee",
                          "facility_code": "AAA"})
    assert r.status_code == 201, r.text
    row = _seen_only_by_a(client, world, r.json()["id"])
    assert row["action"] == "participant.create" and row["outcome"] == "success"


def test_rows_naming_no_facility_are_for_auditors_of_all_facilities(client, factory, world):
    admin = factory.headers(factory.user(Role.admin))
    r = client.post("/v1/users", headers=admin | {"Idempotency-Key": str(uuid.uuid4())},
                    json={"username": "new.person", "password": "a-long-enough-password-1",
                          "role": "coordinator", "facility_codes": ["AAA"]})
    assert r.status_code == 201, r.text
    user_id = r.json()["id"]
    assert _about(client, world["auditor_a"], user_id) == []
    assert _about(client, world["auditor_b"], user_id) == []
    assert [row["network"] for row in _about(client, world["auditor_all"], user_id)] == [None]
    # A refusal that names no record (a list the caller may not read) names no facility.
    b_officer = factory.headers(factory.user(Role.officer, [world["b"]]))
    assert client.get("/v1/audit-events", headers=b_officer).status_code == 403
    denied = [row for row in _rows(client, world["auditor_all"], outcome="denied")
              if row["action"] == "GET /v1/audit-events"]
    assert denied and denied[-1]["facility_id"] is None
    assert not [row for row in _rows(client, world["auditor_b"], outcome="denied")
                if row["action"] == "GET /v1/audit-events"]
