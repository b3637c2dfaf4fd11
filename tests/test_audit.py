"""The audit trail: every write and denial is recorded, the chain is append-only and
tamper-evident, and `peerlink audit verify` finds a row changed behind the service's back."""

import os
import subprocess
import sys

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.models.common import Role


def _verify(db_url: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "app.cli", "audit", "verify"], env=env,
                          capture_output=True, text=True, timeout=60)


def _some_writes(client, factory):
    f = factory.facility("AUD")
    admin = factory.user(Role.admin)
    h = factory.headers(admin)
    for i in range(3):
        r = client.post(f"/v1/facilities/{f.id}/housing-units", headers=h,
                        json={"code": f"U{i}", "name": "Unit"})
        assert r.status_code == 201
    assert client.get("/v1/participants", headers=h).status_code == 403  # a denial
    return admin, h


def test_writes_and_denials_are_audited_with_actor_and_request_id(client, factory):
    admin, h = _some_writes(client, factory)
    rows = factory.audits()
    creates = [r for r in rows if r.action == "housing_unit.create"]
    assert len(creates) == 3
    assert all(r.actor_id == str(admin.id) and r.role == "admin" and r.outcome == "success"
               for r in creates)
    assert all(r.request_id for r in creates)
    denied = [r for r in rows if r.outcome == "denied"]
    assert denied and denied[-1].action == "GET /v1/participants"


def test_audit_endpoint_lists_in_order_with_cursor(client, factory):
    _admin, h = _some_writes(client, factory)
    auditor = factory.user(Role.auditor)
    ah = factory.headers(auditor)
    seen, cursor = [], None
    while True:
        params = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        r = client.get("/v1/audit-events", headers=ah, params=params)
        assert r.status_code == 200
        seen += [e["id"] for e in r.json()["items"]]
        cursor = r.json()["next_cursor"]
        if not cursor:
            break
    assert seen == sorted(seen) and len(seen) == len(set(seen)) >= 4
    r = client.get("/v1/audit-events", headers=ah, params={"outcome": "denied"})
    assert {e["outcome"] for e in r.json()["items"]} == {"denied"}


def test_chain_verifies_then_detects_tampering(client, factory, db_url, is_pg):
    _some_writes(client, factory)
    ok = _verify(db_url)
    assert ok.returncode == 0, ok.stderr
    assert "intact" in ok.stdout

    with factory.engine.begin() as conn:
        # The database itself refuses to rewrite history...
        with pytest.raises(DBAPIError):
            with conn.begin_nested():
                conn.execute(text("UPDATE audit_event SET outcome = 'success' "
                                  "WHERE outcome = 'denied'"))
    # ...so an attacker with owner rights has to switch the guard off first.
    with factory.engine.begin() as conn:
        if is_pg:
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_event_no_update"))
        conn.execute(text("UPDATE audit_event SET outcome = 'success' WHERE outcome = 'denied'"))
    bad = _verify(db_url)
    assert bad.returncode == 1
    assert "BROKEN" in bad.stderr


def test_removed_row_breaks_the_chain(client, factory, db_url, is_pg):
    _some_writes(client, factory)
    with factory.engine.begin() as conn:
        if is_pg:
            conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
        else:
            conn.execute(text("DROP TRIGGER audit_event_no_delete"))
        conn.execute(text("DELETE FROM audit_event WHERE id = (SELECT min(id) + 1 FROM audit_event)"))
    assert _verify(db_url).returncode == 1
