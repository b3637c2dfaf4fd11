"""Rate limits (API-CONVENTIONS): a budget per caller and, without a valid token, per address;
429 problem+json with Retry-After; RateLimit / RateLimit-Policy headers; raising a crisis
escalation is never limited."""

import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.models import Escalation
from app.models.common import Role


@pytest.fixture()
def tight(settings) -> Iterator[TestClient]:
    app = create_app(settings.model_copy(update={"rate_limit_per_caller": "3/minute",
                                                 "rate_limit_anonymous": "2/minute"}))
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def world(factory):
    f = factory.facility("CCJ")
    officer = factory.user(Role.officer, [f])
    return {"f": f, "person": factory.recipient(f), "h": factory.headers(officer),
            "other": factory.headers(factory.user(Role.officer, [f]))}


def test_a_caller_over_budget_gets_429_and_others_do_not(tight, world):
    answers = [tight.get("/v1/facilities", headers=world["h"]) for _ in range(4)]
    assert [r.status_code for r in answers] == [200, 200, 200, 429]
    assert answers[0].headers["RateLimit-Policy"] == '"caller";q=3;w=60'
    assert answers[0].headers["RateLimit"].startswith('"caller";r=2;t=')
    limited = answers[-1]
    assert limited.headers["content-type"] == "application/problem+json"
    assert limited.json()["code"] == "rate_limited"
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert tight.get("/v1/facilities", headers=world["other"]).status_code == 200


def test_raising_an_escalation_is_never_limited(tight, factory, world):
    for _ in range(3):
        tight.get("/v1/facilities", headers=world["h"])
    assert tight.get("/v1/facilities", headers=world["h"]).status_code == 429
    for _ in range(5):
        r = tight.post("/v1/escalations", headers=world["h"] | {
            "Idempotency-Key": str(uuid.uuid4())}, json={
            "participant_id": str(world["person"].id), "category": "suicide_risk",
            "description": "seen", "tier": "imminent"})
        assert r.status_code == 201, r.text
        assert "RateLimit" not in r.headers
    assert factory.count(Escalation) == 5


def test_without_a_token_the_budget_is_per_address(tight, world):
    codes = [tight.get("/v1/facilities").status_code for _ in range(3)]
    assert codes == [401, 401, 429]
    forged = tight.get("/v1/facilities", headers={"Authorization": "Bearer forged"})
    assert forged.status_code == 429  # an invalid token counts as no token
    assert tight.get("/v1/facilities", headers=world["h"]).status_code == 200


def test_health_is_never_limited(tight):
    assert all(tight.get("/livez").status_code == 200 for _ in range(5))


def test_working_and_watching_an_escalation_is_never_limited(tight, factory, world):
    r = tight.post("/v1/escalations", headers=world["h"] | {"Idempotency-Key": "e-1"}, json={
        "participant_id": str(world["person"].id), "category": "suicide_risk",
        "description": "seen", "tier": "imminent"})
    eid = r.json()["id"]
    for _ in range(4):
        tight.get("/v1/facilities", headers=world["h"])
    assert tight.get("/v1/facilities", headers=world["h"]).status_code == 429
    for n in range(5):
        r = tight.post(f"/v1/escalations/{eid}/observations", headers=world["h"] | {
            "Idempotency-Key": f"o-{n}"}, json={"observed_at": _now(), "seen": "on watch"})
        assert r.status_code == 201, r.text
        assert "RateLimit" not in r.headers


def _now() -> str:
    from datetime import UTC, datetime
    return datetime.now(UTC).isoformat()
