"""Cached principals never outlive a revocation or an account change: in this process at
once, in other processes through PostgreSQL NOTIFY, and at worst after the cache's TTL."""

import time

import pytest
from sqlalchemy import text, update

from app.models import User
from app.models.common import Role
from app.security.principal import PRINCIPALS


def _me(client, h):
    return client.get("/v1/auth/me", headers=h).status_code


def test_change_made_by_another_process_reaches_this_one(client, factory, is_pg):
    if not is_pg:
        pytest.skip("SQLite is embedded in one process; nothing to notify")
    user = factory.user(Role.coordinator, [factory.facility()])
    h = factory.headers(user)
    assert _me(client, h) == 200  # now cached
    # Another API process deactivates the account: its Writer notifies in the same transaction.
    with factory.engine.begin() as conn:
        conn.execute(update(User).where(User.id == user.id).values(active=False))
        conn.execute(text("SELECT pg_notify('peerlink_auth', :m)"), {"m": f"sub:{user.id}"})
    deadline = time.monotonic() + 3
    while _me(client, h) == 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _me(client, h) == 401


def test_cache_entry_expires_after_its_ttl(client, factory):
    user = factory.user(Role.coordinator, [factory.facility()])
    h = factory.headers(user)
    old_ttl = PRINCIPALS.ttl
    PRINCIPALS.ttl = 0.3
    try:
        assert _me(client, h) == 200
        with factory.engine.begin() as conn:  # changed behind the service, no notification
            conn.execute(update(User).where(User.id == user.id).values(active=False))
        time.sleep(0.4)
        assert _me(client, h) == 401
    finally:
        PRINCIPALS.ttl = old_ttl


def test_role_change_applies_to_live_tokens_at_once(client, factory):
    f = factory.facility()
    user = factory.user(Role.coordinator, [f])
    admin = factory.headers(factory.user(Role.admin))
    h = factory.headers(user)
    assert client.get("/v1/participants", headers=h).status_code == 200
    r = client.patch(f"/v1/users/{user.id}", headers=admin, json={"role": "officer"})
    assert r.status_code == 200
    # The token still says coordinator, but the account's current role decides.
    assert client.post("/v1/participants", headers=h, json={
        "network": "incarcerated", "legal_name": "X Y", "facility_id": str(f.id)}).status_code == 403
