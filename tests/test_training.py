"""Training: courses, the enrollment workflow (its table in full), code of conduct, and the
certification derived from them: what is missing, expiry, renewal, the expiring list."""

import uuid
from datetime import UTC, date, datetime, timedelta

import pytest

from app.config import CertificationPolicy
from app.models import Enrollment
from app.models.common import Role
from app.services.certification import Completion, add_months, derive
from app.services.training import ENROLLMENT_FLOW

STATES = ["enrolled", "in_progress", "completed", "withdrawn", "failed"]
ACTIONS = ["start", "complete", "withdraw", "fail"]


@pytest.fixture()
def ctx(factory):
    f = factory.facility("CCJ")
    coord = factory.user(Role.coordinator, [f])
    sup = factory.participant(f, is_supporter=True, supporter_availability="active")
    return {"f": f, "h": factory.headers(coord), "sup": sup,
            "admin": factory.headers(factory.user(Role.admin))}


def _days_ago(n: int) -> datetime:
    return datetime.now(UTC) - timedelta(days=n)


def test_admin_manages_courses_and_retired_course_takes_no_enrollment(client, factory, ctx):
    r = client.post("/v1/courses", headers=ctx["admin"], json={
        "title": "Suicide prevention and crisis response", "hours": 12, "network": "incarcerated",
        "required_for_certification": True})
    assert r.status_code == 201, r.text
    course = r.json()
    r = client.post(f"/v1/courses/{course['id']}/retire", headers=ctx["admin"])
    assert r.status_code == 200 and r.json()["active"] is False
    r = client.post("/v1/enrollments", headers=ctx["h"], json={
        "participant_id": str(ctx["sup"].id), "course_id": course["id"]})
    assert r.status_code == 422 and r.json()["code"] == "course_retired"
    listed = client.get("/v1/courses", headers=ctx["h"], params={"active": "false"}).json()
    assert [c["id"] for c in listed["items"]] == [course["id"]]


def test_staff_courses_are_invisible_and_unusable_across_the_wall(client, factory, ctx):
    staff_course = factory.course(network="staff")
    assert client.get(f"/v1/courses/{staff_course.id}", headers=ctx["h"]).status_code == 404
    r = client.post("/v1/enrollments", headers=ctx["h"], json={
        "participant_id": str(ctx["sup"].id), "course_id": str(staff_course.id)})
    assert r.status_code == 404


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("action", ACTIONS)
def test_transition_table_in_full(client, factory, ctx, state, action):
    e = factory.enrollment(ctx["sup"], factory.course(), status=state)
    body = {} if action == "start" else ({"score": 80} if action == "complete" else {"reason": "x"})
    r = client.post(f"/v1/enrollments/{e.id}/{action}", headers=ctx["h"], json=body)
    t = ENROLLMENT_FLOW[action]
    if state in t.sources:
        assert r.status_code == 200, r.text
        assert r.json()["status"] == t.target
    else:
        assert r.status_code == 409 and r.json()["code"] == "invalid_transition"
        assert factory.get(Enrollment, e.id).status == state


def test_roles_outside_the_table_cannot_move_enrollments(client, factory, ctx):
    e = factory.enrollment(ctx["sup"], factory.course())
    for role in (Role.officer, Role.clinician, Role.admin, Role.auditor):
        h = factory.headers(factory.user(role, [ctx["f"]]))
        assert client.post(f"/v1/enrollments/{e.id}/start", headers=h).status_code == 403
    staff = factory.headers(factory.user(Role.staff_coordinator, [ctx["f"]]))
    assert client.post(f"/v1/enrollments/{e.id}/start", headers=staff).status_code == 404
    assert factory.get(Enrollment, e.id).status == "enrolled"


def test_one_open_enrollment_and_stamps_written_once(client, factory, ctx):
    course = factory.course()
    body = {"participant_id": str(ctx["sup"].id), "course_id": str(course.id)}
    first = client.post("/v1/enrollments", headers=ctx["h"], json=body)
    assert first.status_code == 201
    again = client.post("/v1/enrollments", headers=ctx["h"], json=body)
    assert again.status_code == 409 and again.json()["code"] == "enrollment_open"
    eid = first.json()["id"]
    started = client.post(f"/v1/enrollments/{eid}/start", headers=ctx["h"]).json()
    done = client.post(f"/v1/enrollments/{eid}/complete", headers=ctx["h"],
                       json={"score": 91.5}).json()
    assert done["started_at"] == started["started_at"] and done["score"] == 91.5
    assert client.post(f"/v1/enrollments/{eid}/withdraw", headers=ctx["h"],
                       json={}).status_code == 409
    assert client.get(f"/v1/enrollments/{eid}", headers=ctx["h"]).json()["completed_at"] == \
        done["completed_at"]
    # A completed course may be taken again (a new record).
    assert client.post("/v1/enrollments", headers=ctx["h"], json=body).status_code == 201
    assert [e.type for e in factory.events()] == ["enrollment.completed"]


def test_certification_says_what_is_missing_then_is_granted(client, factory, ctx):
    a, b = factory.course(title="Foundations"), factory.course(title="Confidentiality")
    factory.course(required=False)
    url = f"/v1/participants/{ctx['sup'].id}/certification"
    cert = client.get(url, headers=ctx["h"]).json()
    assert cert["certified"] is False
    assert {c["title"] for c in cert["missing"]["courses"]} == {"Foundations", "Confidentiality"}
    assert cert["missing"]["code_of_conduct"] is True
    factory.enrollment(ctx["sup"], a, status="completed", completed_at=_days_ago(3))
    e = factory.enrollment(ctx["sup"], b, status="in_progress")
    r = client.post(f"/v1/participants/{ctx['sup'].id}/code-of-conduct", headers=ctx["h"],
                    json={"conduct_version": "2026-01", "witness_name": "Ms. Ortiz"})
    assert r.status_code == 201 and r.json()["witnessed_by"].startswith("user:")
    assert factory.events("certification.granted") == []
    assert client.post(f"/v1/enrollments/{e.id}/complete", headers=ctx["h"],
                       json={}).status_code == 200
    cert = client.get(url, headers=ctx["h"]).json()
    today = date.today()
    assert cert["certified"] is True and cert["since"] == today.isoformat()
    assert cert["until"] == add_months(today, 24).isoformat()
    granted = factory.events("certification.granted")
    assert len(granted) == 1 and granted[0].entity_id == ctx["sup"].id


def test_expired_certificate_and_renewal_by_refreshers(client, factory, ctx):
    course = factory.course()
    factory.enrollment(ctx["sup"], course, status="completed", completed_at=_days_ago(800))
    factory.signature(ctx["sup"], (_days_ago(800)).date())
    url = f"/v1/participants/{ctx['sup'].id}/certification"
    cert = client.get(url, headers=ctx["h"]).json()
    assert cert["certified"] is False and cert["missing"]["expired"] is True
    assert cert["missing"]["refresher_hours"] == 8
    refresher = factory.course(required=False, refresher=True, hours=8)
    factory.enrollment(ctx["sup"], refresher, status="completed", completed_at=_days_ago(1))
    cert = client.get(url, headers=ctx["h"]).json()
    assert cert["certified"] is True and cert["since"] == _days_ago(1).date().isoformat()


def test_expiring_list(client, factory, ctx):
    course = factory.course()
    soon = ctx["sup"]
    later = factory.participant(ctx["f"], is_supporter=True, supporter_availability="active")
    for person, ago in ((soon, 720), (later, 10)):  # 24 months ~ 730 days
        factory.enrollment(person, course, status="completed", completed_at=_days_ago(ago))
        factory.signature(person, _days_ago(ago).date())
    r = client.get("/v1/certifications/expiring", headers=ctx["h"], params={"within_days": 30})
    assert r.status_code == 200
    assert [x["participant_id"] for x in r.json()] == [str(soon.id)]


def test_peer_supporter_reads_only_their_own_certification(client, factory, ctx):
    other = factory.participant(ctx["f"], is_supporter=True)
    peer = factory.headers(factory.user(Role.peer_supporter, [ctx["f"]], participant=ctx["sup"]))
    assert client.get(f"/v1/participants/{ctx['sup'].id}/certification",
                      headers=peer).status_code == 200
    assert client.get(f"/v1/participants/{other.id}/certification",
                      headers=peer).status_code == 404
    assert client.post("/v1/enrollments", headers=peer, json={
        "participant_id": str(ctx["sup"].id),
        "course_id": str(factory.course().id)}).status_code == 403


def test_derive_rules():
    policy = CertificationPolicy(validity_months=24, refresher_hours=8)
    c1 = uuid.uuid4()
    base = [Completion(c1, date(2024, 1, 31), 10, False)]
    st = derive(required=[(c1, "A")], completions=base, signed_on=date(2024, 2, 1),
                policy=policy, today=date(2025, 1, 1))
    assert st.certified and st.since == date(2024, 2, 1) and st.until == date(2026, 2, 1)
    # Refresher hours add up within the period; the renewal starts the day they are reached.
    ref = [Completion(uuid.uuid4(), date(2025, 6, 1), 4, True),
           Completion(uuid.uuid4(), date(2025, 9, 30), 4, True)]
    st = derive(required=[(c1, "A")], completions=base + ref, signed_on=date(2024, 2, 1),
                policy=policy, today=date(2027, 1, 1))
    assert st.certified and st.since == date(2025, 9, 30) and st.until == date(2027, 9, 30)
    assert add_months(date(2024, 1, 31), 1) == date(2024, 2, 29)
    st = derive(required=[(c1, "A")], completions=[], signed_on=None, policy=policy,
                today=date(2025, 1, 1))
    assert not st.certified and st.missing_courses == [(c1, "A")] and st.conduct_missing
