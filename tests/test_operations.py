"""Operations: request ids, CORS allowlist, metrics by route template, and concurrent
upserts of one external id (one creates, the other updates, one record)."""

import asyncio

import httpx

from app.main import create_app
from app.models import Participant
from app.models.common import Role


def test_request_id_is_echoed_and_generated(client):
    r = client.get("/livez", headers={"X-Request-ID": "3f2b4c1e-8a9d-4e7f-b6c5-1a2b3c4d5e6f"})
    assert r.headers["x-request-id"] == "3f2b4c1e-8a9d-4e7f-b6c5-1a2b3c4d5e6f"
    assert len(client.get("/livez").headers["x-request-id"]) >= 32


def test_cors_allowlist_without_credentials(settings):
    from fastapi.testclient import TestClient

    app = create_app(settings.model_copy(update={"cors_origins": ["https://ui.example"]}))
    with TestClient(app) as c:
        ok = c.options("/v1/participants", headers={
            "Origin": "https://ui.example", "Access-Control-Request-Method": "GET"})
        assert ok.headers["access-control-allow-origin"] == "https://ui.example"
        assert "access-control-allow-credentials" not in ok.headers
        bad = c.options("/v1/participants", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
        assert "access-control-allow-origin" not in bad.headers


def test_metrics_use_route_templates_never_ids(client, factory):
    f = factory.facility()
    h = factory.headers(factory.user(Role.coordinator, [f]))
    p = factory.participant(f)
    assert client.get(f"/v1/participants/{p.id}", headers=h).status_code == 200
    text = client.get("/metrics").text
    assert 'route="/v1/participants/{participant_id}"' in text
    assert str(p.id) not in text


def test_concurrent_upserts_of_one_external_id(app, factory):
    f = factory.facility("CCJ")
    h = factory.headers(factory.user(Role.coordinator, [f]))
    body = {"network": "incarcerated", "legal_name": "Race Case", "facility_code": "CCJ"}

    async def race() -> list[int]:
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
                rs = await asyncio.gather(*[
                    c.put("/v1/participants/by-external-id/jms/RACE-1", headers=h, json=body)
                    for _ in range(4)])
        return sorted(r.status_code for r in rs)

    statuses = asyncio.run(race())
    assert statuses[0] in (200, 201) and statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201}
    assert factory.count(Participant) == 1
    assert len(factory.events("participant.created")) == 1


def test_cors_on_every_answer_errors_included(settings, factory):
    """A server failure (500), a refused token (401), a too large body (413) and a problem from
    a route all carry the CORS headers, so a browser reads the problem instead of an opaque
    network error."""
    from fastapi.testclient import TestClient

    app = create_app(settings.model_copy(update={"cors_origins": ["https://ui.example"],
                                                   "max_body_bytes": 1_000}))

    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_api_route("/v1/boom-for-test", boom)
    origin = {"Origin": "https://ui.example"}
    f = factory.facility()
    h = factory.headers(factory.user(Role.coordinator, [f])) | origin
    with TestClient(app, raise_server_exceptions=False) as c:
        answers = {
            500: c.get("/v1/boom-for-test", headers=origin),
            401: c.get("/v1/participants", headers=origin),
            413: c.post("/v1/participants", headers=h, content=b"{" + b" " * 2_000 + b"}"),
            404: c.get(f"/v1/participants/{f.id}", headers=h),
            200: c.get("/v1/participants", headers=h),
        }
        for status, r in answers.items():
            assert r.status_code == status, (status, r.text)
            assert r.headers.get("access-control-allow-origin") == "https://ui.example", status
            assert "x-request-id" in r.headers["access-control-expose-headers"].lower()
        assert answers[500].headers["content-type"].startswith("application/problem+json")
        other = c.get("/v1/boom-for-test", headers={"Origin": "https://evil.example"})
        assert other.status_code == 500
        assert "access-control-allow-origin" not in other.headers
