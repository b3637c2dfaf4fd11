"""Behind a proxy (PEERLINK_TRUSTED_PROXIES): rate limits and the audit trail see the real
client address from X-Forwarded-For, but only when the direct peer is a trusted proxy;
from anyone else the header is ignored."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.config import Settings
from app.main import create_app
from app.models import AuditEvent
from app.models.common import Role
from app.proxies import ClientAddressMiddleware
from app.services.audit import verify_chain

PROXY = ("10.0.0.5", 40000)          # inside the trusted network below
STRANGER = ("198.51.100.9", 40000)   # not trusted


@pytest.fixture()
def proxied(settings: Settings):
    apps = {}

    def client(peer: tuple[str, int]) -> TestClient:
        if "app" not in apps:
            apps["app"] = create_app(settings.model_copy(update={
                "trusted_proxies": ["10.0.0.0/24"], "rate_limit_anonymous": "2/minute"}))
        return TestClient(apps["app"], raise_server_exceptions=False, client=peer)

    return client


@pytest.fixture()
def via_proxy(proxied) -> Iterator[TestClient]:
    with proxied(PROXY) as c:
        yield c


@pytest.fixture()
def via_stranger(proxied) -> Iterator[TestClient]:
    with proxied(STRANGER) as c:
        yield c


def _xff(address: str) -> dict[str, str]:
    return {"X-Forwarded-For": address}


def test_behind_a_trusted_proxy_each_forwarded_address_has_its_own_budget(via_proxy):
    one = [via_proxy.get("/v1/facilities", headers=_xff("203.0.113.7")).status_code
           for _ in range(3)]
    assert one == [401, 401, 429]
    # Another client behind the same proxy is not punished for the first one.
    other = [via_proxy.get("/v1/facilities", headers=_xff("203.0.113.8")).status_code
             for _ in range(2)]
    assert other == [401, 401]
    # A chain of proxies: the nearest untrusted address is the client.
    chained = via_proxy.get("/v1/facilities", headers=_xff("203.0.113.9, 10.0.0.7"))
    assert chained.status_code == 401


def test_from_an_untrusted_peer_the_header_is_ignored(via_stranger):
    codes = [via_stranger.get("/v1/facilities",
                              headers=_xff(f"203.0.113.{n}")).status_code for n in range(3)]
    assert codes == [401, 401, 429]  # one budget: the peer's own address


def test_by_default_no_peer_is_trusted(settings):
    app = create_app(settings.model_copy(update={"rate_limit_anonymous": "2/minute"}))
    with TestClient(app, raise_server_exceptions=False, client=("127.0.0.1", 40000)) as c:
        codes = [c.get("/v1/facilities", headers=_xff(f"203.0.113.{n}")).status_code
                 for n in range(3)]
    assert codes == [401, 401, 429]


def _denials(factory) -> list[AuditEvent]:
    with Session(factory.engine) as s:
        return list(s.scalars(select(AuditEvent).where(AuditEvent.outcome == "not_found")
                              .order_by(AuditEvent.id)))


def test_the_audit_trail_records_the_forwarded_address_only_from_a_trusted_proxy(
        proxied, factory):
    f = factory.facility("CCJ")
    h = factory.headers(factory.user(Role.coordinator, [f]))
    missing = f"/v1/participants/{uuid.uuid4()}"
    with proxied(PROXY) as c:
        assert c.get(missing, headers=h | _xff("203.0.113.7")).status_code == 404
    with proxied(STRANGER) as c:
        assert c.get(missing, headers=h | _xff("203.0.113.7")).status_code == 404
    rows = _denials(factory)
    assert [r.client_address for r in rows] == ["203.0.113.7", "198.51.100.9"]
    with Session(factory.engine) as s:
        checked, broken = verify_chain(s)
    assert checked >= 2 and broken == []


def test_the_audit_api_shows_the_address(proxied, factory):
    f = factory.facility("CCJ")
    admin = factory.headers(factory.user(Role.admin))
    coordinator = factory.headers(factory.user(Role.coordinator, [f]))
    with proxied(PROXY) as c:
        c.get(f"/v1/participants/{uuid.uuid4()}", headers=coordinator | _xff("203.0.113.44"))
        items = c.get("/v1/audit-events?limit=50", headers=admin).json()["items"]
    assert "203.0.113.44" in {i["client_address"] for i in items}


def test_a_trusted_proxy_sets_the_scheme_too(via_proxy, via_stranger):
    seen = []

    async def probe(scope, receive, send):  # the app as a proxy-aware client sees it
        seen.append(scope["scheme"])

    mw = ClientAddressMiddleware(probe, ["10.0.0.0/24"])
    for peer in (PROXY, STRANGER):
        asyncio.run(mw({"type": "http", "scheme": "http", "client": peer,
                        "headers": [(b"x-forwarded-proto", b"https")]}, None, None))
    assert seen == ["https", "http"]


@pytest.mark.parametrize("raw, parsed", [
    ("", []), ("10.0.0.5", ["10.0.0.5"]), (" 10.0.0.5 , 10.1.0.0/16 ", ["10.0.0.5", "10.1.0.0/16"]),
    ('["fd00::/8"]', ["fd00::/8"]),
])
def test_the_setting_is_a_comma_separated_list(monkeypatch, raw, parsed):
    monkeypatch.setenv("PEERLINK_TRUSTED_PROXIES", raw)
    assert Settings(_env_file=None).trusted_proxies == parsed


@pytest.mark.parametrize("raw", ["*", "proxy.internal", "10.0.0.300"])
def test_the_setting_refuses_what_is_not_an_address(monkeypatch, raw):
    monkeypatch.setenv("PEERLINK_TRUSTED_PROXIES", raw)
    with pytest.raises(ValidationError, match="trusted_proxies"):
        Settings(_env_file=None)
