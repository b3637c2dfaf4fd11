"""Cached principals never outlive a revocation or an account change: in this process at
once, in other processes through PostgreSQL NOTIFY, and at worst after the cache's TTL."""

import time
import uuid

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


def _listener_pids(conn) -> list[int]:
    from app.security.invalidation import APPLICATION_NAME
    return list(conn.execute(text(
        "SELECT pid FROM pg_stat_activity WHERE application_name = :name "
        "AND datname = current_database()"), {"name": APPLICATION_NAME}).scalars())


def test_a_cut_listen_connection_stops_the_cache_at_once(client, factory, is_pg):
    """The LISTEN connection is cut (as a failover or an idle-session killer would), then
    another process revokes: its NOTIFY is lost, yet the very next request is refused, with no
    wait. The cache comes back once the connection is re-established."""
    if not is_pg:
        pytest.skip("SQLite is embedded in one process; nothing to notify")
    user = factory.user(Role.coordinator, [factory.facility()])
    h = factory.headers(user)
    assert _me(client, h) == 200  # now cached
    with factory.engine.begin() as conn:
        pids = _listener_pids(conn)
        assert len(pids) == 1
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pids[0]})
    # The server has closed it. Probed in autocommit: inside one transaction pg_stat_activity
    # is a snapshot taken at its first read, so a backend still exiting then never leaves it
    # (two CI runs failed so, however long they waited).
    deadline = time.monotonic() + 30
    with factory.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        while pids[0] in _listener_pids(conn):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    # Another API process deactivates the account; its NOTIFY reaches no one here.
    with factory.engine.begin() as conn:
        conn.execute(update(User).where(User.id == user.id).values(active=False))
        conn.execute(text("SELECT pg_notify('peerlink_auth', :m)"), {"m": f"sub:{user.id}"})
    assert _me(client, h) == 401

    # Reconnected, the process caches again: a change made behind its back (no NOTIFY) is
    # not seen until the entry's TTL, which proves the entry was served from the cache.
    other = factory.user(Role.coordinator, [factory.facility()])
    oh = factory.headers(other)
    deadline = time.monotonic() + 30
    while not PRINCIPALS.trusted():
        assert time.monotonic() < deadline, "the LISTEN connection did not come back"
        time.sleep(0.05)
    assert _me(client, oh) == 200
    with factory.engine.begin() as conn:
        conn.execute(update(User).where(User.id == other.id).values(active=False))
    assert _me(client, oh) == 200


def test_the_cache_is_not_served_past_the_heartbeat_lease():
    """A LISTEN connection that dies silently stops answering its heartbeat: once the lease
    it last earned runs out, cached principals are not served (the database decides)."""
    from app.security.principal import Principal, PrincipalCache
    cache = PrincipalCache(ttl_seconds=60)
    cache.listening(None, time.monotonic() + 0.2)
    principal = Principal(kind="user", id=uuid.uuid4(), name="u", role=Role.coordinator,
                          scopes=frozenset(), all_facilities=False, facility_ids=frozenset(),
                          networks=frozenset(), participant_id=None, jti="j1")
    now = time.time()
    cache.put(principal, now)
    assert cache.get("j1", now) == principal
    time.sleep(0.25)
    assert cache.get("j1", now) is None
    cache.listening(None, time.monotonic() + 5)  # the next heartbeat answered
    assert cache.get("j1", now) == principal


def test_a_read_that_overlaps_an_invalidation_is_not_cached():
    from app.security.principal import Principal, PrincipalCache
    cache = PrincipalCache(ttl_seconds=60)
    cache.listening(None, time.monotonic() + 60)
    principal = Principal(kind="user", id=uuid.uuid4(), name="u", role=Role.coordinator,
                          scopes=frozenset(), all_facilities=False, facility_ids=frozenset(),
                          networks=frozenset(), participant_id=None, jti="j1")
    before = cache.generation
    cache.apply(f"sub:{principal.id}")  # arrives while the read is in flight
    cache.put(principal, time.time(), before)
    assert cache.get("j1", time.time()) is None
