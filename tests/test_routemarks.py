"""Middleware learns which routes it treats apart from the routes' own marks
(app/routemarks.py), never from path strings: the sets are derived from the routes, hold every
marked route and nothing else, and a route declared crisis is never rate limited."""

import re
import uuid

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.main import crisis_actions
from app.models.common import Role
from app.ratelimit import RateLimitMiddleware
from app.routemarks import (
    CrisisWorkflow,
    api_routes,
    audits_own_denials,
    crisis_workflow,
    declares,
    form_body,
    import_file,
    marked,
    no_idempotency_key,
)


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}]+\}", lambda _: str(uuid.uuid4()), template)


@pytest.mark.parametrize("mark", [form_body, import_file, no_idempotency_key, audits_own_denials,
                                  crisis_workflow])
def test_each_set_holds_the_marked_routes_and_nothing_else(app, mark):
    routes = api_routes(app.routes)
    found = marked(routes, mark)
    assert found.templates, f"no route is marked {mark.__name__}"
    for route in routes:
        for method in route.methods:
            expected = declares(route, mark)
            assert ((method, route.path) in found.templates) == expected, (method, route.path)
            assert found.matches(method, _concrete(route.path)) == expected, (method, route.path)


def test_the_crisis_actions_are_the_crisis_workflows_writes(app):
    """The marks reproduce the rule the rate limiter had as path strings: every POST under
    /v1/escalations, and recording a disclosure; and acknowledging a page; and referring a person
    (a high-risk reason opens an escalation)."""
    routes = api_routes(app.routes)
    crisis = crisis_actions(routes).templates
    assert crisis == {("POST", r.path) for r in routes if "POST" in r.methods and (
        r.path == "/v1/escalations" or r.path.startswith("/v1/escalations/")
        or (r.path.startswith("/v1/support-sessions/") and r.path.endswith("/disclosures"))
        or r.path == "/v1/escalation-notifications/{notification_id}/acknowledge"
        or r.path == "/v1/referrals")}  # a referral with a high-risk reason opens one
    # Reading the crisis workflow is counted like any read.
    assert not any(m == "GET" for m, _ in crisis)


def test_marks_never_reach_the_contract(app):
    assert "routemarks" not in str(app.openapi())
    for name in ("form_body", "import_file", "crisis_workflow", "no_idempotency_key",
                 "audits_own_denials"):
        assert name not in str(app.openapi())


def test_a_route_declared_crisis_is_never_rate_limited(app, settings, factory):
    h = factory.headers(factory.user(Role.officer, [factory.facility("CCJ")]))
    tiny = FastAPI()
    # What bearer_principal needs to tell the caller (the real app's keys and database).
    for name in ("settings", "keyring", "read_sessionmaker"):
        setattr(tiny.state, name, getattr(app.state, name))

    @tiny.post("/alarms/{n}", dependencies=[CrisisWorkflow])
    async def raise_alarm(n: int) -> dict[str, int]:
        return {"n": n}

    @tiny.post("/notes/{n}")
    async def write_note(n: int) -> dict[str, int]:
        return {"n": n}

    tight = settings.model_copy(update={"rate_limit_per_caller": "2/minute"})
    tiny.add_middleware(RateLimitMiddleware, settings=tight,
                        crisis_actions=crisis_actions(api_routes(tiny.routes)))
    with TestClient(tiny) as c:
        codes = [c.post(f"/notes/{n}", headers=h).status_code for n in range(3)]
        assert codes == [200, 200, 429]
        for n in range(5):  # the budget is spent; the crisis route still answers
            r = c.post(f"/alarms/{n}", headers=h)
            assert r.status_code == 200 and "RateLimit" not in r.headers
