"""The event feed as a polling integrator notices it: the events they may see, in order, with
a cursor that resumes after a restart and never skips an event that commits late."""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text

from app.main import create_app
from app.models.common import Role
from app.services import audit
from app.services.events import EVENT_TYPES, FAMILY_SCOPES

INC = "incarcerated"


def _poll(client: Any, headers: dict[str, str], **params: Any) -> dict[str, Any]:
    r = client.get("/v1/events", headers=headers, params=params)
    assert r.status_code == 200, r.text
    return r.json()


def test_the_feed_serves_what_the_caller_may_see_in_order(client, factory):
    a, b = factory.facility(), factory.facility()
    c = factory.api_client(["participants:read", "pairings:read", "events:read"], [a], [INC])
    h = factory.headers(c)
    visible = [factory.outbox_event("participant.created", facility=a),
               factory.outbox_event("pairing.proposed", facility=a, entity_type="pairing")]
    factory.outbox_event("participant.created", facility=b)  # another facility
    factory.outbox_event("participant.created", facility=a, network="staff")  # other network
    factory.outbox_event("participant.created", facility=None, network=None)  # no facility
    factory.outbox_event("keep_apart.opened", facility=a)  # no keep_apart:read
    factory.outbox_event("escalation.created", facility=a, entity_type="escalation")
    factory.outbox_event("webhook_endpoint.disabled", network=None,
                         entity_type="webhook_endpoint")  # not its endpoint
    visible.append(factory.outbox_event("participant.released", facility=a))
    page = _poll(client, h)
    assert [e["id"] for e in page["items"]] == [str(e.event_id) for e in visible]
    first = page["items"][0]
    assert set(first) == {"id", "type", "occurred_at", "data", "url"}
    assert first["data"]["id"] == str(visible[0].entity_id)
    assert first["url"] == f"/v1/participants/{visible[0].entity_id}"
    assert page["items"][1]["url"] == f"/v1/pairings/{visible[1].entity_id}"
    # Filtering by type, one page at a time.
    only = _poll(client, h, types="participant.released,participant.created")
    assert [e["type"] for e in only["items"]] == ["participant.created", "participant.released"]
    one = _poll(client, h, limit=1)
    two = _poll(client, h, limit=1, after=one["next_cursor"])
    assert [e["id"] for e in one["items"] + two["items"]] == [str(e.event_id)
                                                               for e in visible[:2]]
    # An all-facilities client of both networks sees the rest of its scopes' events too.
    wide = factory.headers(factory.api_client(["participants:read", "events:read"], None,
                                              [INC, "staff"]))
    assert len(_poll(client, wide, types="participant.created")["items"]) == 4


def test_the_cursor_is_always_given_and_survives_a_restart(client, factory, settings):
    a = factory.facility()
    c = factory.api_client(["participants:read", "events:read"], [a], [INC])
    h = factory.headers(c)
    empty = _poll(client, h)
    assert empty["items"] == [] and empty["next_cursor"]
    factory.outbox_event("participant.created", facility=a)
    factory.outbox_event("keep_apart.opened", facility=a)  # invisible: skipped for good
    page = _poll(client, h, after=empty["next_cursor"])
    assert len(page["items"]) == 1
    again = _poll(client, h, after=page["next_cursor"])
    assert again["items"] == [] and again["next_cursor"] == page["next_cursor"]
    later = factory.outbox_event("participant.updated", facility=a)
    # A new process (a restart) resumes from the same cursor.
    with TestClient(create_app(settings), raise_server_exceptions=False) as fresh:
        resumed = _poll(fresh, h, after=page["next_cursor"])
    assert [e["id"] for e in resumed["items"]] == [str(later.event_id)]


def test_the_feed_refuses_bad_input_and_unscoped_callers(client, factory):
    a = factory.facility()
    h = factory.headers(factory.api_client(["participants:read", "events:read"], [a], [INC]))
    r = client.get("/v1/events", headers=h, params={"types": "participant.created,nope.nope"})
    assert r.status_code == 422 and r.json()["code"] == "unknown_event_type"
    r = client.get("/v1/events", headers=h, params={"after": "not-a-cursor"})
    assert r.status_code == 422 and r.json()["code"] == "invalid_cursor"
    r = client.get("/v1/events", headers=h, params={"limit": 0})
    assert r.status_code == 422
    no_scope = factory.headers(factory.api_client(["participants:read"], [a], [INC]))
    r = client.get("/v1/events", headers=no_scope)
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"


def test_admins_see_endpoint_events_and_no_records(client, factory):
    a = factory.facility()
    admin = factory.headers(factory.user(Role.admin))
    factory.outbox_event("participant.created", facility=a)
    factory.outbox_event("escalation.breached", facility=a, entity_type="escalation")
    disabled = factory.outbox_event("webhook_endpoint.disabled", network=None,
                                    entity_type="webhook_endpoint")
    assert [e["id"] for e in _poll(client, admin)["items"]] == [str(disabled.event_id)]


def test_an_admins_feed_is_endpoint_events_only_and_the_contract_says_so(client, factory):
    """Issue 13, item 19: an admin reads no records (no confidential content) and belongs to
    no network. Not one record event of any type reaches them, even one with no facility or
    network; the endpoint events do, and the contract tells an integrator so."""
    a = factory.facility()
    admin = factory.headers(factory.user(Role.admin))
    records = [t for t in EVENT_TYPES if not t.startswith("webhook_endpoint.")]
    for type_ in records:
        factory.outbox_event(type_, facility=a)
        factory.outbox_event(type_, facility=None, network=None)
    shown = factory.outbox_event("webhook_endpoint.disabled", network=None,
                                 entity_type="webhook_endpoint")
    assert [e["id"] for e in _poll(client, admin, limit=200)["items"]] == [str(shown.event_id)]
    assert _poll(client, admin, types=",".join(records))["items"] == []
    contract = client.get("/openapi.json").json()
    feed = contract["paths"]["/v1/events"]["get"]["description"]
    assert "admin" in feed and "webhook_endpoint.disabled" in feed


def test_every_emitted_event_type_is_in_the_catalogue_with_a_scope():
    """A new `emit("x.y", ...)` must be added to EVENT_TYPES, or nobody would see it."""
    root = Path(__file__).resolve().parent.parent / "app"
    source = "\n".join(p.read_text() for p in root.rglob("*.py"))
    literal = set(re.findall(r'emit\(\s*"([a-z_]+\.[a-z_]+)"', source))
    literal |= set(re.findall(r'_emit\(w, "([a-z_]+\.[a-z_]+)"', source))
    literal |= set(re.findall(r'_event\(w, "([a-z_]+\.[a-z_]+)"', source))
    assert literal and literal <= set(EVENT_TYPES), sorted(literal - set(EVENT_TYPES))
    assert all(t.split(".")[0] in FAMILY_SCOPES for t in EVENT_TYPES)


def test_an_event_committing_late_is_not_skipped(client, factory, settings, is_pg):
    """PostgreSQL: outbox ids are drawn under the audit chain's lock, held to COMMIT, so a
    later write waits for an earlier one and ids become visible in order: a poller never sees
    n+1 while n is in flight (and so never moves its cursor past n)."""
    if not is_pg:
        pytest.skip("SQLite has one writer at a time")
    a = factory.facility()
    c = factory.api_client(["participants:read", "participants:write", "events:read"], [a],
                           [INC])
    h = factory.headers(c)
    start = _poll(client, h)["next_cursor"]
    with factory.engine.connect() as slow:  # a write mid-commit: lock taken, event inserted
        slow.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": audit._LOCK_KEY})
        slow.execute(text(
            "INSERT INTO outbox_event (event_id, type, occurred_at, entity_type, entity_id, "
            "facility_id, network, data) VALUES (:e, 'participant.created', now(), "
            "'participant', :p, :f, 'incarcerated', '{}')"),
            {"e": "01900000-0000-7000-8000-000000000001", "p": str(a.id), "f": str(a.id)})
        done: dict[str, Any] = {}

        def later_write() -> None:
            done["r"] = client.post("/v1/participants", headers=h, json={
                "network": INC, "legal_name": "Later", "facility_code": a.code})

        t = threading.Thread(target=later_write)
        t.start()
        t.join(timeout=1.5)
        assert t.is_alive(), "the later write did not wait for the earlier one"
        page = _poll(client, h, after=start)
        assert page["items"] == [] and page["next_cursor"] == start
        slow.commit()
    t.join(timeout=10)
    assert done["r"].status_code == 201
    page = _poll(client, h, after=start)
    assert [e["data"]["id"] for e in page["items"]] == [str(a.id), done["r"].json()["id"]]
