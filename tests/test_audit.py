"""The audit trail: every write and denial is recorded, the chain is append-only and
tamper-evident, and `peerlink audit verify` finds a row changed, removed or inserted behind the
service's back. On PostgreSQL the database hashes the rows under the chain's lock
(audit_chain_append) with the same digest verify recomputes; crisis writes reach that lock ahead
of routine ones."""

import os
import re
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from app.models.common import Role
from app.services import audit


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


def _guard_off(conn, is_pg) -> None:
    if is_pg:
        conn.execute(text("ALTER TABLE audit_event DISABLE TRIGGER audit_event_append_only"))
    else:
        conn.execute(text("DROP TRIGGER audit_event_no_update"))
        conn.execute(text("DROP TRIGGER audit_event_no_delete"))


def _broken_ids(result: subprocess.CompletedProcess[str]) -> list[int]:
    assert result.returncode == 1 and "BROKEN" in result.stderr, result.stdout + result.stderr
    return [int(x) for x in re.findall(r"\d+", result.stderr.split("ids", 1)[1])]


def test_a_row_inserted_into_history_breaks_the_chain(client, factory, db_url, is_pg):
    """A forged row slipped between two real ones, with a well-formed hash over its own fields
    and its predecessor's hash: the row after it no longer links, and verify names it."""
    _some_writes(client, factory)
    with factory.engine.begin() as conn:
        ids = [r.id for r in conn.execute(text("SELECT id FROM audit_event ORDER BY id"))]
        assert len(ids) >= 4
        at = ids[1]
        pred = conn.execute(text("SELECT * FROM audit_event WHERE id = :i"), {"i": at}).one()
        _guard_off(conn, is_pg)
        # Make room after `at` (two steps: the primary key holds at every row).
        conn.execute(text("UPDATE audit_event SET id = id + 1000000 WHERE id > :i"), {"i": at})
        conn.execute(text("UPDATE audit_event SET id = id - 999999 WHERE id > :i"), {"i": at})
        forged = {"occurred_at": pred.occurred_at if isinstance(pred.occurred_at, datetime)
                  else datetime.fromisoformat(pred.occurred_at).replace(tzinfo=UTC),
                  "actor_type": "user", "actor_id": str(uuid.uuid4()), "role": "admin",
                  "client_id": None, "facility_id": None, "action": "housing_unit.create",
                  "entity_type": "housing_unit", "entity_id": str(uuid.uuid4()),
                  "outcome": "success", "request_id": "forged"}
        forged["occurred_at"] = forged["occurred_at"].astimezone(UTC)
        digest = audit._digest(pred.hash, audit._hashed_fields(forged))
        conn.execute(text(
            "INSERT INTO audit_event (id, occurred_at, actor_type, actor_id, role, client_id, "
            "facility_id, action, entity_type, entity_id, outcome, request_id, prev_hash, hash) "
            "VALUES (:id, :occurred_at, :actor_type, :actor_id, :role, :client_id, "
            ":facility_id, :action, :entity_type, :entity_id, :outcome, :request_id, :prev, "
            ":hash)"), forged | {"id": at + 1, "prev": pred.hash, "hash": digest})
    broken = _broken_ids(_verify(db_url))
    assert at + 2 in broken and set(broken) <= {at + 1, at + 2}, broken


def test_a_changed_row_is_named_and_the_rest_still_links(client, factory, db_url, is_pg):
    _some_writes(client, factory)
    with factory.engine.begin() as conn:
        ids = [r.id for r in conn.execute(text("SELECT id FROM audit_event ORDER BY id"))]
        _guard_off(conn, is_pg)
        conn.execute(text("UPDATE audit_event SET entity_id = 'someone-else' WHERE id = :i"),
                     {"i": ids[2]})
    assert _broken_ids(_verify(db_url)) == [ids[2]]


def test_the_database_and_the_api_hash_alike(client, factory, db_url, is_pg):
    """On PostgreSQL the rows are hashed by the database (audit_chain_append, under the chain's
    lock); every one of them checks out with the API's own digest, whoever wrote it (a write,
    a denial in its own transaction, a sign-in), and ids follow the chain."""
    _admin, h = _some_writes(client, factory)
    client.post("/v1/auth/token", data={"grant_type": "password", "username": "nobody",
                                        "password": "wrong-password-123"})
    rows = factory.audits()
    assert {r.outcome for r in rows} >= {"success", "denied"}
    prev = audit.GENESIS
    for r in rows:
        assert r.prev_hash == prev
        assert r.hash == audit._digest(prev, audit._hashed_fields(r))
        prev = r.hash
    ok = _verify(db_url)
    assert ok.returncode == 0 and f"intact: {len(rows)} rows" in ok.stdout


def test_concurrent_writers_keep_one_chain(client, factory, db_url, is_pg):
    """Routine writes and crisis raises at once, from several threads: one chain, every row
    linked, outbox ids in the order their transactions committed."""
    f = factory.facility()
    person = factory.participant(f)
    h = factory.headers(factory.user(Role.coordinator, [f]))
    errors: list[str] = []

    def routine(i: int) -> None:
        for j in range(4):
            r = client.post("/v1/participants", headers=h, json={
                "network": "incarcerated", "legal_name": f"Person {i}-{j}",
                "facility_code": f.code})
            if r.status_code != 201:
                errors.append(r.text)

    def crisis(i: int) -> None:
        for _ in range(3):
            r = client.post("/v1/escalations", headers=h | {"Idempotency-Key": str(uuid.uuid4())},
                            json={"participant_id": str(person.id), "category": "self_harm",
                                  "tier": "high", "description": "Cut marks seen."})
            if r.status_code != 201:
                errors.append(r.text)

    threads = [threading.Thread(target=routine, args=(i,)) for i in range(4)] + \
              [threading.Thread(target=crisis, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[:3]
    ok = _verify(db_url)
    assert ok.returncode == 0, ok.stderr
    actions = [r.action for r in factory.audits()]
    assert actions.count("participant.create") == 16 and actions.count("escalation.create") == 6


def test_crisis_writes_pass_routine_ones_waiting_for_the_chain(client, factory, is_pg):
    """PostgreSQL: routine writers queue at a gate before the chain's lock; a raise goes
    straight to the chain's. With the gate held (routine writers piling up behind it), a raise
    still commits."""
    if not is_pg:
        pytest.skip("SQLite has one writer at a time: a raise waits its turn")
    f = factory.facility()
    person = factory.participant(f)
    h = factory.headers(factory.user(Role.coordinator, [f]))
    done: dict[str, Any] = {}

    def routine() -> None:
        done["routine"] = client.post("/v1/participants", headers=h, json={
            "network": "incarcerated", "legal_name": "Routine", "facility_code": f.code})

    with factory.engine.connect() as gate:
        gate.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": audit._GATE_KEY})
        t = threading.Thread(target=routine)
        t.start()
        t.join(timeout=1.5)
        assert t.is_alive(), "the routine write did not queue at the gate"
        r = client.post("/v1/escalations", headers=h | {"Idempotency-Key": str(uuid.uuid4())},
                        json={"participant_id": str(person.id), "category": "suicide_risk",
                              "tier": "imminent", "description": "Has a ligature."})
        assert r.status_code == 201, r.text
        assert t.is_alive()
        gate.rollback()
    t.join(timeout=20)
    assert done["routine"].status_code == 201
    actions = [a.action for a in factory.audits()]
    assert actions.index("escalation.create") < actions.index("participant.create")


def test_a_commits_payloads_are_the_canonical_json_each_hash_covers():
    """The payloads a commit sends audit_chain_append (built a row at a time, the shared
    fields once) are exactly `_payload(_hashed_fields(row))`, which verify recomputes: None,
    quotes, control and non-ASCII characters, the optional keys, and values that are not plain
    strings (the general path)."""
    from enum import StrEnum

    from asgi_correlation_id import correlation_id

    from app.proxies import CLIENT_ADDRESS

    class Odd(StrEnum):
        x = "x"

    f = uuid.uuid4()
    entries = [audit.AuditEntry("participant.create", "success", "participant", str(uuid.uuid4()),
                                f if i % 3 else None, "incarcerated" if i % 2 else None)
               for i in range(30)]
    entries += [audit.AuditEntry('a"\\\n\u00e9\u2028\x01', "refused", None, None, None, "staff"),
                audit.AuditEntry(Odd.x, "success", "p", "1"),
                audit.AuditEntry("x", "success", "p", "", None, "")]
    for actor in (audit.Actor("client", str(uuid.uuid4()), "integration", "plc_jms"),
                  audit.Actor("system"), audit.Actor("user", 'ü"x', Odd.x, None)):
        for request_id, address in ((None, None), ('r\u00e9q"1', "10.0.0.1")):
            tokens = correlation_id.set(request_id), CLIENT_ADDRESS.set(address)
            try:
                rows = audit._rows(entries, actor)
            finally:
                correlation_id.reset(tokens[0])
                CLIENT_ADDRESS.reset(tokens[1])
            assert audit._payloads(rows) == [audit._payload(audit._hashed_fields(r))
                                             for r in rows]
