"""Webhooks as an integrator notices them: registration, signatures an independent verifier
accepts, retries on a controllable clock, in-order (per record) and at-least-once delivery,
crisis events first, endpoints that disable themselves, the SSRF guard, and deliveries only of
what the owner may see.

A real HTTP receiver (a small server in a thread) takes the webhooks; the worker's own round
(`deliver_round`) sends them, with the clock passed in."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from app.config import Settings
from app.db import make_async_engine, make_sessionmaker
from app.models import (
    ApiClient,
    AuditEvent,
    Escalation,
    OutboxEvent,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.models.common import Role
from app.security.notes import NoteCipher
from app.services import outbound
from app.services.webhook_delivery import claim, deliver_round
from app.worker import run_forever
from tests.conftest import TEST_KEY

INC = "incarcerated"
CLIENT_SCOPES = ["participants:read", "participants:write", "webhooks:read", "webhooks:write",
                 "events:read"]


class Receiver:
    """An HTTP server on loopback that records every request and answers from a script."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], bytes]] = []
        self.arrived: list[float] = []  # time.monotonic() of each request, in order
        self.script: list[int] = []  # status codes to answer, in order; then `default`
        self.default = 200
        self.answer_once: dict[str, int] = {}  # event id -> status code, for its first request
        self.hang_first = 0.0  # seconds the first request waits before answering
        self.delay = 0.0
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                with receiver.lock:
                    receiver.requests.append((self.path, dict(self.headers.items()), body))
                    receiver.arrived.append(time.monotonic())
                    first = len(receiver.requests) == 1
                    status = receiver.script.pop(0) if receiver.script else receiver.default
                    status = receiver.answer_once.pop(json.loads(body)["id"], status)
                if first and receiver.hang_first:
                    time.sleep(receiver.hang_first)
                if receiver.delay:
                    time.sleep(receiver.delay)
                try:
                    self.send_response(status)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:
                    pass

            def log_message(self, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # the sender opens connections side by side

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(b) for _p, _h, b in self.requests]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture()
def receiver():  # type: ignore[no-untyped-def]
    r = Receiver()
    yield r
    r.close()


def run_round(settings: Settings, now: datetime | None = None) -> dict[str, int]:
    async def go() -> dict[str, int]:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                return await deliver_round(session, settings, now=now)
        finally:
            await engine.dispose()
    return asyncio.run(go())


def deliveries(factory: Any) -> list[WebhookDelivery]:
    with Session(factory.engine) as s:
        return list(s.scalars(select(WebhookDelivery).order_by(WebhookDelivery.event_id)))


def endpoint_row(factory: Any, endpoint_id: Any) -> WebhookEndpoint:
    return factory.get(WebhookEndpoint, uuid.UUID(str(endpoint_id)))


def _client(factory: Any, facility: Any, scopes: list[str] | None = None,
            networks: list[str] | None = None) -> tuple[ApiClient, dict[str, str]]:
    c = factory.api_client(scopes or CLIENT_SCOPES, [facility], networks or [INC])
    return c, factory.headers(c)


def _register(client: Any, headers: dict[str, str], url: str,
              types: list[str] | None = None) -> dict[str, Any]:
    r = client.post("/v1/webhook-endpoints", headers=headers,
                    json={"url": url, "event_types": types or ["participant.created"]})
    assert r.status_code == 201, r.text
    return r.json()


# --- registration ------------------------------------------------------------------------

def test_register_shows_the_secret_once_and_keeps_it_encrypted(client, factory):
    admin = factory.user(Role.admin)
    h = factory.headers(admin)
    r = client.post("/v1/webhook-endpoints", headers=h, json={
        "url": "https://hooks.example.org/peerlink", "event_types": ["webhook_endpoint.disabled"],
        "description": "Ops pager"})
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["cache-control"] == "no-store"
    assert r.headers["location"] == f"/v1/webhook-endpoints/{body['id']}"
    secret = body["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    assert body["status"] == "active" and body["owner_kind"] == "user"
    got = client.get(f"/v1/webhook-endpoints/{body['id']}", headers=h)
    assert got.status_code == 200 and "secret" not in got.json()
    listed = client.get("/v1/webhook-endpoints", headers=h).json()["items"]
    assert [e["id"] for e in listed] == [body["id"]] and "secret" not in listed[0]
    row = endpoint_row(factory, body["id"])
    assert secret.encode() not in row.secret_ciphertext and secret[6:].encode() not in \
        row.secret_ciphertext
    assert [a.action for a in factory.audits("webhook_endpoint.create")] == \
        ["webhook_endpoint.create"]


def test_registration_refuses_bad_input_and_changes_nothing(client, factory):
    a = factory.facility()
    c, h = _client(factory, a)
    other, _ = _client(factory, a)
    cases = [
        ({"url": "http://hooks.example.org/x", "event_types": ["participant.created"]},
         "webhook_url_not_https"),
        ({"url": "ftp://hooks.example.org/x", "event_types": ["participant.created"]},
         "webhook_url_invalid"),
        ({"url": "https://user:pw@hooks.example.org/x", "event_types": ["participant.created"]},
         "webhook_url_invalid"),
        ({"url": "https://hooks.example.org/x", "event_types": ["participant.exploded"]},
         "unknown_event_type"),
        # The client has no keep_apart:read: it may not subscribe to keep-apart events.
        ({"url": "https://hooks.example.org/x", "event_types": ["keep_apart.opened"]},
         "event_type_not_allowed"),
        ({"url": "https://hooks.example.org/x", "event_types": ["participant.created"],
          "client_id": str(other.id)}, "owner_not_allowed"),
        ({"url": "https://hooks.example.org/x", "event_types": ["participant.created"],
          "secret": "whsec_mine"}, "validation_error"),
        ({"url": "https://hooks.example.org/x", "event_types": []}, "validation_error"),
    ]
    for body, code in cases:
        r = client.post("/v1/webhook-endpoints", headers=h, json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == code, (body, r.json())
        assert "pw" not in r.text
    assert factory.count(WebhookEndpoint) == 0


def test_admin_registers_for_a_client_whose_view_counts(client, factory):
    a = factory.facility()
    c, _ = _client(factory, a, scopes=["participants:read", "webhooks:read"])
    admin = factory.headers(factory.user(Role.admin))
    r = client.post("/v1/webhook-endpoints", headers=admin, json={
        "url": "https://hooks.example.org/x", "event_types": ["participant.created"],
        "client_id": str(c.id)})
    assert r.status_code == 201, r.text
    assert (r.json()["owner_kind"], r.json()["owner_id"]) == ("client", str(c.id))
    bare, _ = _client(factory, a, scopes=["participants:read"])
    r = client.post("/v1/webhook-endpoints", headers=admin, json={
        "url": "https://hooks.example.org/x", "event_types": ["participant.created"],
        "client_id": str(bare.id)})
    assert r.status_code == 422 and r.json()["code"] == "client_lacks_webhooks_scope"
    # The admin's own view lacks participant events: refused for an admin-owned endpoint.
    r = client.post("/v1/webhook-endpoints", headers=admin, json={
        "url": "https://hooks.example.org/x", "event_types": ["participant.created"]})
    assert r.status_code == 422 and r.json()["code"] == "event_type_not_allowed"


def test_a_client_manages_only_its_own_endpoints(client, factory):
    a = factory.facility()
    mine, h_mine = _client(factory, a)
    _theirs, h_theirs = _client(factory, a)
    ep = _register(client, h_mine, "https://hooks.example.org/mine")
    event = factory.outbox_event("participant.created", facility=a)
    d = factory.webhook_delivery(endpoint_row(factory, ep["id"]), event)
    for method, path, body in (
            ("GET", f"/v1/webhook-endpoints/{ep['id']}", None),
            ("PATCH", f"/v1/webhook-endpoints/{ep['id']}", {"url": "https://evil.example.org/"}),
            ("POST", f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", {}),
            ("GET", f"/v1/webhook-deliveries/{d.id}", None),
            ("POST", f"/v1/webhook-deliveries/{d.id}/redeliver", None)):
        r = client.request(method, path, headers=h_theirs, json=body)
        assert r.status_code == 404 and r.json()["code"] == "not_found", (method, path, r.text)
    assert client.get("/v1/webhook-endpoints", headers=h_theirs).json()["items"] == []
    assert client.get("/v1/webhook-deliveries", headers=h_theirs).json()["items"] == []
    assert endpoint_row(factory, ep["id"]).url == "https://hooks.example.org/mine"
    admin = factory.headers(factory.user(Role.admin))
    assert [e["id"] for e in client.get("/v1/webhook-endpoints", headers=admin).json()["items"]] \
        == [ep["id"]]
    assert client.get(f"/v1/webhook-deliveries/{d.id}", headers=h_mine).status_code == 200


# --- delivery ----------------------------------------------------------------------------

def test_a_delivery_is_thin_signed_and_verifies_with_the_library(client, factory, settings,
                                                                 receiver):
    a = factory.facility()
    c, h = _client(factory, a)
    ep = _register(client, h, receiver.url())
    r = client.post("/v1/participants", headers=h, json={
        "network": INC, "legal_name": "Jordan Q. Example", "facility_code": a.code})
    assert r.status_code == 201
    person = r.json()["id"]
    result = run_round(settings)
    assert result["sent"] == 1 and result["delivered"] == 1
    (path, headers, body), = receiver.requests
    payload = Webhook(ep["secret"]).verify(body, headers)  # the library's own verifier
    assert set(payload) == {"id", "type", "occurred_at", "data", "url"}
    assert payload["type"] == "participant.created"
    assert payload["data"]["id"] == person and payload["url"] == f"/v1/participants/{person}"
    assert payload["id"] == headers["webhook-id"] == str(factory.events("participant.created")[0]
                                                         .event_id)
    assert b"Jordan" not in body and b"Example" not in body
    with pytest.raises(WebhookVerificationError):  # a different secret does not verify
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(body, headers)
    with pytest.raises(WebhookVerificationError):  # nor a changed body
        Webhook(ep["secret"]).verify(body.replace(b"created", b"updated"), headers)
    listed = client.get("/v1/webhook-deliveries", headers=h).json()["items"]
    assert len(listed) == 1 and listed[0]["status"] == "delivered"
    assert listed[0]["event_id"] == payload["id"]
    (attempt,) = listed[0]["attempt_log"]
    assert attempt["status_code"] == 200 and attempt["error"] is None \
        and attempt["duration_ms"] >= 0
    assert run_round(settings)["sent"] == 0  # delivered once


def test_rotation_sends_both_signatures_during_the_overlap(client, factory, settings, receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    ep = _register(client, h, receiver.url())
    r = client.post(f"/v1/webhook-endpoints/{ep['id']}/rotate-secret", headers=h,
                    json={"overlap_hours": 24})
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store"
    new = r.json()["secret"]
    assert new != ep["secret"] and new.startswith("whsec_")
    now = datetime.now(UTC)
    factory.outbox_event("participant.created", facility=a)
    run_round(settings, now)
    _p, headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(new).verify(body, headers)
    Webhook(ep["secret"]).verify(body, headers)
    # After the overlap only the new secret signs.
    factory.outbox_event("participant.created", facility=a)
    run_round(settings, now + timedelta(hours=25))
    _p, headers, body = receiver.requests[-1]
    assert len(headers["webhook-signature"].split(" ")) == 1
    Webhook(new).verify(body, headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(ep["secret"]).verify(body, headers)


def test_retries_back_off_exponentially_with_jitter(client, factory, settings, receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    _register(client, h, receiver.url())
    factory.outbox_event("participant.created", facility=a)
    receiver.script = [500, 503, 500]
    now = datetime.now(UTC)
    run_round(settings, now)
    gaps = []
    for n in range(1, 4):
        (d,) = deliveries(factory)
        assert d.status == "pending" and d.attempts == n
        gap = d.next_attempt_at - now
        gaps.append(gap.total_seconds())
        expected = 30 * 2 ** (n - 1)
        assert expected * 0.8 - 1 <= gap.total_seconds() <= expected * 1.2 + 1, (n, gap)
        # Not before it is due.
        assert run_round(settings, d.next_attempt_at - timedelta(seconds=1))["sent"] == 0
        now = d.next_attempt_at
        run_round(settings, now)
    (d,) = deliveries(factory)
    assert d.status == "delivered" and d.attempts == 4 and len(receiver.requests) == 4
    assert len({hd["webhook-id"] for _p, hd, _b in receiver.requests}) == 1  # one message id
    item = client.get("/v1/webhook-deliveries", headers=h).json()["items"][0]
    assert [x["status_code"] for x in item["attempt_log"]] == [500, 503, 500, 200]
    assert [x["error"] for x in item["attempt_log"]] == ["http_status"] * 3 + [None]


def test_one_record_gets_its_events_in_order(client, factory, settings, receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    _register(client, h, receiver.url(), ["participant.created", "participant.updated"])
    person = uuid.uuid4()
    first = factory.outbox_event("participant.created", facility=a, entity_id=person)
    second = factory.outbox_event("participant.updated", facility=a, entity_id=person)
    receiver.script = [500]
    now = datetime.now(UTC)
    run_round(settings, now)
    assert [b["id"] for b in receiver.bodies()] == [str(first.event_id)]
    # The second waits behind the first, even when it is itself due.
    assert run_round(settings, now + timedelta(seconds=5))["sent"] == 0
    run_round(settings, now + timedelta(minutes=5))
    run_round(settings, now + timedelta(minutes=5))
    assert [b["id"] for b in receiver.bodies()] == [str(first.event_id)] * 2 + \
        [str(second.event_id)]


def test_another_record_does_not_wait_behind_a_failing_one(client, factory, settings, receiver):
    """Order is per record: a retrying delivery holds back its own record's later events only."""
    a = factory.facility()
    _c, h = _client(factory, a)
    _register(client, h, receiver.url(), ["participant.created", "participant.updated"])
    stuck, other = uuid.uuid4(), uuid.uuid4()
    first = factory.outbox_event("participant.created", facility=a, entity_id=stuck)
    held = factory.outbox_event("participant.updated", facility=a, entity_id=stuck)
    free = factory.outbox_event("participant.created", facility=a, entity_id=other)
    receiver.answer_once = {str(first.event_id): 500}
    now = datetime.now(UTC)
    run_round(settings, now)
    got = [b["id"] for b in receiver.bodies()]
    assert sorted(got) == sorted([str(first.event_id), str(free.event_id)])  # not `held`
    by_event = {d.event_id: d.status for d in deliveries(factory)}
    assert (by_event[first.id], by_event[held.id], by_event[free.id]) == \
        ("pending", "pending", "delivered")
    # The endpoint answered in that round: it is not failing, only the one record waits.
    (row,) = [endpoint_row(factory, d.endpoint_id) for d in deliveries(factory)[:1]]
    assert row.consecutive_failures == 0 and row.retry_at is None
    run_round(settings, now + timedelta(minutes=5))
    run_round(settings, now + timedelta(minutes=5))
    assert [b["id"] for b in receiver.bodies()][-2:] == [str(first.event_id),
                                                        str(held.event_id)]


def test_after_about_three_days_a_delivery_is_given_up_and_the_next_goes(client, factory,
                                                                          settings, receiver):
    settings = settings.model_copy(update={"webhook_disable_after_failures": 1000})
    a = factory.facility()
    _c, h = _client(factory, a)
    _register(client, h, receiver.url(), ["participant.created", "participant.updated"])
    person = uuid.uuid4()
    factory.outbox_event("participant.created", facility=a, entity_id=person)
    later = factory.outbox_event("participant.updated", facility=a, entity_id=person)
    receiver.default = 500
    start = now = datetime.now(UTC)
    run_round(settings, now)
    for _ in range(40):
        d = deliveries(factory)[0]
        if d.status != "pending":
            break
        now = d.next_attempt_at
        run_round(settings, now)
    d = deliveries(factory)[0]
    assert d.status == "failed"
    hours = (now - start).total_seconds() / 3600
    assert 48 <= hours <= 72, hours
    assert 12 <= d.attempts <= 20
    # The record's next event went at once, in the round that gave the first up.
    assert receiver.bodies()[-1]["id"] == str(later.event_id)
    receiver.default = 200
    run_round(settings, deliveries(factory)[1].next_attempt_at)
    assert receiver.bodies()[-1]["id"] == str(later.event_id)
    assert deliveries(factory)[1].status == "delivered"


def test_410_disables_the_endpoint(client, factory, settings, receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    ep = _register(client, h, receiver.url(), ["participant.created", "participant.updated"])
    person = uuid.uuid4()
    factory.outbox_event("participant.created", facility=a, entity_id=person)
    factory.outbox_event("participant.updated", facility=a, entity_id=person)
    receiver.script = [410]
    now = datetime.now(UTC)
    run_round(settings, now)
    row = endpoint_row(factory, ep["id"])
    assert (row.status, row.disabled_reason) == ("disabled", "gone")
    assert [d.status for d in deliveries(factory)] == ["failed", "pending"]
    assert run_round(settings, now + timedelta(days=1))["sent"] == 0
    (event,) = factory.events("webhook_endpoint.disabled")
    assert event.entity_id == row.id and event.data == {"reason": "gone"}
    # Re-enabled by its owner: the queued delivery goes.
    r = client.patch(f"/v1/webhook-endpoints/{ep['id']}", headers=h, json={"status": "active"})
    assert r.status_code == 200 and r.json()["status"] == "active"
    run_round(settings, now + timedelta(days=1))
    assert [d.status for d in deliveries(factory)] == ["failed", "delivered"]


def test_a_run_of_failures_disables_the_endpoint_and_tells_the_admin(client, factory, settings,
                                                                      receiver):
    settings = settings.model_copy(update={"webhook_disable_after_failures": 3})
    a = factory.facility()
    _c, h = _client(factory, a)
    ep = _register(client, h, receiver.url())
    factory.outbox_event("participant.created", facility=a)
    receiver.default = 500
    now = datetime.now(UTC)
    for _ in range(3):
        run_round(settings, now)
        now = deliveries(factory)[0].next_attempt_at
    got = client.get(f"/v1/webhook-endpoints/{ep['id']}", headers=h).json()
    assert (got["status"], got["disabled_reason"], got["consecutive_failures"]) == \
        ("disabled", "failures", 3)
    admin = factory.headers(factory.user(Role.admin))
    feed = client.get("/v1/events", headers=admin,
                      params={"types": "webhook_endpoint.disabled"}).json()["items"]
    assert [(e["type"], e["data"]["id"], e["data"]["reason"]) for e in feed] == \
        [("webhook_endpoint.disabled", ep["id"], "failures")]
    assert feed[0]["url"] == f"/v1/webhook-endpoints/{ep['id']}"
    assert run_round(settings, now + timedelta(days=1))["sent"] == 0
    assert [a.entity_id for a in factory.audits("webhook_endpoint.disable")] == [ep["id"]]
    # The owning client sees its own endpoint's event too; another client does not.
    own = client.get("/v1/events", headers=h, params={"types": "webhook_endpoint.disabled"})
    assert [e["data"]["id"] for e in own.json()["items"]] == [ep["id"]]
    _other, h_other = _client(factory, a)
    assert client.get("/v1/events", headers=h_other,
                      params={"types": "webhook_endpoint.disabled"}).json()["items"] == []


def test_a_worker_killed_mid_delivery_leaves_it_to_be_sent_again(client, factory, settings,
                                                                 receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    ep = _register(client, h, receiver.url())
    factory.outbox_event("participant.created", facility=a)
    receiver.hang_first = 3.0
    now = datetime.now(UTC)

    async def killed() -> None:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                with pytest.raises(TimeoutError):
                    await asyncio.wait_for(deliver_round(session, settings, now=now), 0.7)
        finally:
            await engine.dispose()

    asyncio.run(killed())
    assert len(receiver.requests) == 1  # it was sent; the worker died before recording
    (d,) = deliveries(factory)
    assert d.status == "pending" and d.lease_until is not None
    # While the lease holds, no other worker sends it again.
    assert run_round(settings, now + timedelta(seconds=30))["sent"] == 0
    run_round(settings, d.lease_until + timedelta(seconds=1))
    (d,) = deliveries(factory)
    assert d.status == "delivered"
    assert len(receiver.requests) == 2
    ids = [hd["webhook-id"] for _p, hd, _b in receiver.requests]
    assert ids[0] == ids[1]  # the same message: the receiver dedupes on webhook-id
    Webhook(ep["secret"]).verify(receiver.requests[1][2], receiver.requests[1][1])


def test_concurrent_workers_never_send_one_attempt_twice(client, factory, settings, receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    eps = [_register(client, h, receiver.url(f"/hook/{n}"),
                     ["participant.created", "participant.updated"]) for n in range(4)]
    people = [uuid.uuid4(), uuid.uuid4()]
    events = [factory.outbox_event("participant.updated" if n > 1 else "participant.created",
                                   facility=a, entity_id=people[n % 2]) for n in range(5)]
    receiver.delay = 0.02

    async def workers(now: datetime) -> None:
        engines = [make_async_engine(settings) for _ in range(3)]
        try:
            async def one(engine: Any) -> None:
                async with make_sessionmaker(engine)() as session:
                    await deliver_round(session, settings, now=now)
            await asyncio.gather(*(one(e) for e in engines))
        finally:
            for e in engines:
                await e.dispose()

    now = datetime.now(UTC)
    for _ in range(12):
        asyncio.run(workers(now))
        if all(d.status == "delivered" for d in deliveries(factory)) and \
                len(deliveries(factory)) == len(eps) * len(events):
            break
    sent = [(p, hd["webhook-id"]) for p, hd, _b in receiver.requests]
    assert len(sent) == len(set(sent)) == len(eps) * len(events)
    for n in range(4):  # and each endpoint got each record's events in order
        for person in people:
            got = [json.loads(b)["id"] for p, _h, b in receiver.requests
                   if p == f"/hook/{n}" and json.loads(b)["data"]["id"] == str(person)]
            assert got == [str(e.event_id) for e in events if e.entity_id == person]


def test_redirects_are_not_followed_and_slow_receivers_time_out(client, factory, settings,
                                                                receiver):
    settings = settings.model_copy(update={"webhook_timeout_seconds": 0.5})
    a = factory.facility()
    _c, h = _client(factory, a)
    _register(client, h, receiver.url())
    factory.outbox_event("participant.created", facility=a)
    receiver.script = [302]
    now = datetime.now(UTC)
    run_round(settings, now)
    receiver.hang_first = 0.0
    receiver.delay = 2.0
    run_round(settings, deliveries(factory)[0].next_attempt_at)
    receiver.delay = 0.0
    run_round(settings, deliveries(factory)[0].next_attempt_at)
    item = client.get("/v1/webhook-deliveries", headers=h).json()["items"][0]
    assert [(x["status_code"], x["error"]) for x in item["attempt_log"]] == \
        [(302, "redirect_refused"), (None, "timeout"), (200, None)]
    assert item["status"] == "delivered"
    assert all(p == "/hook" for p, _h, _b in receiver.requests)  # no Location followed


def test_changing_an_endpoint_is_checked_like_registering_it(client, factory):
    a = factory.facility()
    _c, h = _client(factory, a)
    ep = _register(client, h, "https://hooks.example.org/a")
    path = f"/v1/webhook-endpoints/{ep['id']}"
    for body, status, code in (
            ({"url": "http://hooks.example.org/b"}, 422, "webhook_url_not_https"),
            ({"event_types": ["keep_apart.opened"]}, 422, "event_type_not_allowed"),
            ({"status": "paused"}, 422, "validation_error"),
            ({"owner_id": str(a.id)}, 422, "validation_error")):
        r = client.patch(path, headers=h, json=body)
        assert (r.status_code, r.json()["code"]) == (status, code), (body, r.text)
    r = client.patch(path, headers={**h, "If-Match": '"99"'}, json={"description": "x"})
    assert r.status_code == 412
    row = endpoint_row(factory, ep["id"])
    assert (row.url, row.event_types, row.version) == ("https://hooks.example.org/a",
                                                      ["participant.created"], 1)
    r = client.patch(path, headers={**h, "If-Match": '"1"'},
                     json={"url": "https://hooks.example.org/b",
                           "event_types": ["participant.created", "participant.updated"]})
    assert r.status_code == 200 and r.headers["etag"] == '"2"'
    assert r.json()["event_types"] == ["participant.created", "participant.updated"]
    # Rotation without overlap: the old secret stops at once.
    r = client.post(f"{path}/rotate-secret", headers=h, json={"overlap_hours": 0})
    assert r.status_code == 200 and r.json()["previous_secret_expires_at"] is None


def test_a_slow_receiver_never_delays_the_crisis_clock(client, factory, settings, receiver):
    """The worker runs each job on its own schedule: while a webhook round waits on a slow
    receiver, an escalation falling due is still found breached within the sweep interval."""
    settings = settings.model_copy(update={"escalation_sweep_seconds": 0.5,
                                           "webhook_poll_seconds": 0.5,
                                           "webhook_timeout_seconds": 8})
    a = factory.facility()
    _c, h = _client(factory, a)
    _register(client, h, receiver.url())
    factory.outbox_event("participant.created", facility=a)
    receiver.hang_first = 5.0
    esc = factory.escalation(factory.participant(a), tier="imminent")
    with Session(factory.engine) as s:
        s.execute(update(Escalation).where(Escalation.id == esc.id)
                  .values(ack_deadline=datetime.now(UTC) + timedelta(seconds=1.5)))
        s.commit()

    async def go() -> float:
        engine = make_async_engine(settings)
        stop = asyncio.Event()
        task = asyncio.create_task(run_forever(make_sessionmaker(engine), settings, stop))
        t0 = time.monotonic()
        try:
            while time.monotonic() - t0 < 4.5:
                await asyncio.sleep(0.1)
                if await asyncio.to_thread(factory.events, "escalation.breached"):
                    break
            return time.monotonic() - t0
        finally:
            stop.set()
            await task
            await engine.dispose()

    elapsed = asyncio.run(go())
    assert len(receiver.requests) >= 1  # the webhook round was hanging on the receiver
    assert factory.events("escalation.breached") and elapsed < 3.5, elapsed


# --- crisis first, throughput ------------------------------------------------------------

CRISIS_SCOPES = CLIENT_SCOPES + ["escalations:read"]
MIXED = ["participant.created", "participant.updated", "escalation.created",
         "escalation.breached"]


def _claim(settings: Settings, now: datetime, **kw: Any) -> list[Any]:
    async def go() -> list[Any]:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as s:
                return await claim(s, settings, now, NoteCipher.from_settings(settings), **kw)
        finally:
            await engine.dispose()
    return asyncio.run(go())


def _fan_out(settings: Settings) -> int:
    from app.services.webhook_delivery import fan_out

    async def go() -> int:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as s:
                return await fan_out(s, datetime.now(UTC))
        finally:
            await engine.dispose()
    return asyncio.run(go())


def test_crisis_events_are_claimed_first_with_slots_of_their_own(client, factory, settings):
    from app.services.webhook_delivery import CRISIS_SLOTS, ROUTINE_HELD

    a = factory.facility()
    _c, h = _client(factory, a, scopes=CRISIS_SCOPES)
    ep = _register(client, h, "http://127.0.0.1:9/hook", MIXED)
    backlog = [factory.outbox_event("participant.created", facility=a)
               for _ in range(10)]
    esc = factory.outbox_event("escalation.created", facility=a, entity_type="escalation")
    breach = factory.outbox_event("escalation.breached", facility=a, entity_type="escalation",
                                  entity_id=esc.entity_id)
    assert _fan_out(settings) == len(backlog) + 2
    now = datetime.now(UTC) + timedelta(seconds=1)
    ep_id = uuid.UUID(ep["id"])
    # Every routine slot taken: the escalation is still taken (its record's later event waits).
    got = _claim(settings, now, busy={(ep_id, False): ROUTINE_HELD})
    assert [c.msg_id for c in got] == [str(esc.event_id)] and got[0].crisis
    # Crisis slots full: nothing more of the crisis lane; routine slots free: the oldest
    # routine heads, as many as there are slots.
    got = _claim(settings, now, busy={(ep_id, True): CRISIS_SLOTS,
                                      (ep_id, False): ROUTINE_HELD - 5})
    assert [c.msg_id for c in got] == [str(e.event_id) for e in backlog[:5]]
    by_event = {d.event_id: d for d in deliveries(factory)}
    assert by_event[esc.id].crisis and by_event[breach.id].crisis
    assert not by_event[backlog[0].id].crisis
    assert by_event[breach.id].entity_id == esc.entity_id and by_event[breach.id].attempts == 0


def test_crisis_events_past_the_fan_out_window_are_queued_at_once(client, factory, settings,
                                                                  monkeypatch):
    from app.services import webhook_delivery

    monkeypatch.setattr(webhook_delivery, "FAN_OUT_WINDOW", 10)
    a = factory.facility()
    _c, h = _client(factory, a, scopes=CRISIS_SCOPES)
    ep = _register(client, h, "http://127.0.0.1:9/hook", MIXED)
    backlog = [factory.outbox_event("participant.created", facility=a) for _ in range(25)]
    esc = factory.outbox_event("escalation.created", facility=a, entity_type="escalation")
    assert _fan_out(settings) == 10 + 1
    assert esc.id in {d.event_id for d in deliveries(factory)}
    assert endpoint_row(factory, ep["id"]).last_event_id == backlog[9].id
    # The cursor catches up without queueing the escalation twice.
    assert _fan_out(settings) + _fan_out(settings) == 15
    assert sorted(d.event_id for d in deliveries(factory)) == \
        sorted([e.id for e in backlog] + [esc.id])
    assert endpoint_row(factory, ep["id"]).last_event_id == esc.id


def test_a_failing_endpoint_is_probed_one_at_a_time_and_crisis_events_still_go(
        client, factory, settings, receiver):
    """Sends go side by side, so the endpoint counts failed rounds, not failed requests: a
    receiver down for a moment is not disabled by one batch of failures. While failing it gets
    one routine attempt at a time, paced by the backoff; crisis deliveries keep their own."""
    from app.services.webhook_delivery import ROUTINE_HELD, ROUTINE_SLOTS

    a = factory.facility()
    _c, h = _client(factory, a, scopes=CRISIS_SCOPES)
    ep = _register(client, h, receiver.url(), MIXED)
    for _ in range(ROUTINE_HELD * 2):
        factory.outbox_event("participant.created", facility=a)
    receiver.default = 503
    now = datetime.now(UTC)
    run_round(settings, now)
    # One batch (sent side by side, recorded together or nearly), then the endpoint waits.
    assert ROUTINE_SLOTS <= len(receiver.requests) <= ROUTINE_HELD
    row = endpoint_row(factory, ep["id"])
    assert (row.status, row.consecutive_failures) == ("active", 1)
    assert now + timedelta(seconds=23) <= row.retry_at <= now + timedelta(seconds=37)
    first = len(receiver.requests)
    # Before its retry time: no routine attempt, but an escalation goes at once.
    esc = factory.outbox_event("escalation.created", facility=a, entity_type="escalation")
    run_round(settings, now + timedelta(seconds=5))
    assert len(receiver.requests) == first + 1
    assert receiver.bodies()[-1]["id"] == str(esc.event_id)
    assert endpoint_row(factory, ep["id"]).consecutive_failures == 1  # it was waiting
    # At its retry time: one probe; failing, the next waits twice as long.
    probe_at = row.retry_at
    run_round(settings, probe_at)
    assert len(receiver.requests) == first + 2
    row = endpoint_row(factory, ep["id"])
    assert row.consecutive_failures == 2
    assert probe_at + timedelta(seconds=47) <= row.retry_at <= probe_at + timedelta(seconds=73)
    # The receiver is back: the probe succeeds and everything due drains in the same round.
    receiver.default = 200
    run_round(settings, row.retry_at + timedelta(minutes=5))
    row = endpoint_row(factory, ep["id"])
    assert (row.consecutive_failures, row.retry_at) == (0, None)
    assert {d.status for d in deliveries(factory)} == {"delivered"}


def test_an_endpoint_drains_a_backlog_side_by_side(client, factory, settings, receiver):
    """A fast receiver, a backlog of different records: a round keeps taking work while there is
    any, sending side by side (the rate, 50 deliveries/s or more, is bench/webhooks.py's figure
    with the real worker: a timed unit test would measure the machine's load)."""
    from app.services.webhook_delivery import ROUTINE_SLOTS

    a = factory.facility()
    _c, h = _client(factory, a)
    _register(client, h, receiver.url())
    n = 300
    for _ in range(n):
        factory.outbox_event("participant.created", facility=a)
    receiver.delay = 0.01
    started = time.monotonic()
    result = run_round(settings)
    while result["sent"] and len(receiver.requests) < n:  # a round stops after ROUND_SECONDS
        result = run_round(settings)
    elapsed = time.monotonic() - started
    assert len(receiver.requests) == n and {d.status for d in deliveries(factory)} == \
        {"delivered"}
    # Side by side: requests overlapped at the receiver.
    spans = sorted(receiver.arrived)
    overlapping = max(sum(1 for t in spans[i:i + ROUTINE_SLOTS] if t - spans[i] < 0.01)
                      for i in range(len(spans)))
    assert overlapping >= 4, overlapping
    assert elapsed < 60


# --- what is delivered -------------------------------------------------------------------

def test_only_what_the_owner_may_see_now_is_delivered(client, factory, settings, receiver):
    a, b = factory.facility(), factory.facility()
    scopes = CLIENT_SCOPES + ["keep_apart:read"]
    c, h = _client(factory, a, scopes=scopes)
    _register(client, h, receiver.url(), ["participant.created", "keep_apart.opened"])
    seen = factory.outbox_event("participant.created", facility=a)
    factory.outbox_event("participant.created", facility=b)  # other facility
    factory.outbox_event("participant.created", facility=a, network="staff")  # other network
    factory.outbox_event("participant.created", facility=None, network=None)  # no facility
    factory.outbox_event("participant.updated", facility=a)  # not subscribed
    order = factory.outbox_event("keep_apart.opened", facility=a, entity_type="keep_apart_order")
    now = datetime.now(UTC)
    for _ in range(3):
        run_round(settings, now)
    # Order holds per record, not across records: the two arrive in either order.
    assert sorted(x["id"] for x in receiver.bodies()) == sorted(
        [str(seen.event_id), str(order.event_id)]
    )
    # The owner loses keep_apart:read (an admin changes the client): no more keep-apart events,
    # including one already queued.
    factory.outbox_event("keep_apart.opened", facility=a, entity_type="keep_apart_order")
    receiver.script = [500]
    run_round(settings, now)  # queued; its first attempt fails
    admin = factory.headers(factory.user(Role.admin))
    assert client.patch(f"/v1/clients/{c.id}", headers=admin,
                        json={"scopes": CLIENT_SCOPES}).status_code == 200
    factory.outbox_event("keep_apart.opened", facility=a, entity_type="keep_apart_order")
    run_round(settings, now + timedelta(minutes=5))
    assert len(receiver.requests) == 2 + 1  # the queued one: once, before the change
    assert [d.status for d in deliveries(factory)] == ["delivered", "delivered", "skipped"]
    # An owner who loses webhooks:read gets nothing; given back, delivery resumes.
    no_hooks = [x for x in CLIENT_SCOPES if x != "webhooks:read"]
    assert client.patch(f"/v1/clients/{c.id}", headers=admin,
                        json={"scopes": no_hooks}).status_code == 200
    factory.outbox_event("participant.created", facility=a)
    run_round(settings, now + timedelta(minutes=6))
    assert len(receiver.requests) == 3
    assert client.patch(f"/v1/clients/{c.id}", headers=admin,
                        json={"scopes": CLIENT_SCOPES}).status_code == 200
    run_round(settings, now + timedelta(minutes=7))
    assert len(receiver.requests) == 4
    # A deactivated owner gets nothing.
    assert client.patch(f"/v1/clients/{c.id}", headers=admin,
                        json={"active": False}).status_code == 200
    factory.outbox_event("participant.created", facility=a)
    run_round(settings, now + timedelta(minutes=10))
    assert len(receiver.requests) == 4


@pytest.fixture()
def prod(settings: Settings) -> Settings:
    key = base64.b64encode(b"k" * 32).decode()
    return Settings(database_url=settings.database_url, mode="production",
                    jwt_private_key=TEST_KEY, note_keys={"k1": key}, note_key_id="k1",
                    log_level="WARNING", embedded_worker=False)


@pytest.mark.parametrize(("url", "code"), [
    ("https://127.0.0.1/hook", "webhook_url_address_refused"),
    ("https://10.1.2.3/hook", "webhook_url_address_refused"),
    ("https://192.168.0.10/hook", "webhook_url_address_refused"),
    ("https://169.254.169.254/latest/meta-data/", "webhook_url_address_refused"),
    ("https://[::1]/hook", "webhook_url_address_refused"),
    ("https://[fd00:ec2::254]/hook", "webhook_url_address_refused"),
    ("https://[::ffff:10.0.0.1]/hook", "webhook_url_address_refused"),
    ("https://100.64.0.1/hook", "webhook_url_address_refused"),
    ("https://localhost/hook", "webhook_url_address_refused"),  # a name resolving to loopback
    ("https://0.0.0.0/hook", "webhook_url_address_refused"),
    ("http://93.184.216.34/hook", "webhook_url_not_https"),
    ("http://127.0.0.1/hook", "webhook_url_not_https"),
])
def test_production_refuses_private_targets(prod, url, code):
    with pytest.raises(outbound.TargetRefused) as exc:
        asyncio.run(outbound.resolve(url, prod))
    assert exc.value.code == code


def test_production_pins_the_checked_address(prod):
    target = asyncio.run(outbound.resolve("https://93.184.216.34:8443/in?x=1", prod))
    assert target.url == "https://93.184.216.34:8443/in?x=1"
    assert target.host_header == "93.184.216.34:8443" and target.sni_hostname is None


def test_production_registration_and_every_attempt_check_the_address(factory, prod, settings,
                                                                     receiver):
    from fastapi.testclient import TestClient

    from app.main import create_app

    admin = factory.user(Role.admin)
    with TestClient(create_app(prod), raise_server_exceptions=False) as pc:
        h = factory.headers(admin)  # the production app signs with the same test key
        for url, code in (("https://10.0.0.5/hook", "webhook_url_address_refused"),
                          ("https://localhost/hook", "webhook_url_address_refused"),
                          (receiver.url(), "webhook_url_not_https")):
            r = pc.post("/v1/webhook-endpoints", headers=h,
                        json={"url": url, "event_types": ["webhook_endpoint.disabled"]})
            assert r.status_code == 422 and r.json()["code"] == code, r.text
            assert r.json()["errors"][0]["field"] == "url"
    assert factory.count(WebhookEndpoint) == 0
    # An endpoint whose host resolves to loopback by the time of sending (rebinding, or a
    # row from before): refused at the attempt, nothing reaches the receiver.
    port = receiver.server.server_address[1]
    ep, _secret = factory.webhook_endpoint(admin, url=f"https://localhost:{port}/hook")
    with Session(factory.engine) as s:  # sealed with the production key
        row = s.get(WebhookEndpoint, ep.id)
        from app.services.webhooks import seal

        seal(NoteCipher.from_settings(prod), row, "whsec_" + base64.b64encode(b"s" * 32).decode(),
             None)
        s.commit()
    factory.outbox_event("webhook_endpoint.disabled", network=None,
                         entity_type="webhook_endpoint")
    run_round(prod)
    assert receiver.requests == []
    (d,) = deliveries(factory)
    assert d.status == "pending" and d.last_error == "address_refused"


def test_redeliver_queues_one_more_attempt(client, factory, settings, receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    ep = _register(client, h, receiver.url())
    factory.outbox_event("participant.created", facility=a)
    run_round(settings)
    (d,) = deliveries(factory)
    assert d.status == "delivered"
    r = client.post(f"/v1/webhook-deliveries/{d.id}/redeliver", headers=h)
    assert r.status_code == 202 and r.json()["status"] == "pending" and r.json()["manual"]
    r2 = client.post(f"/v1/webhook-deliveries/{d.id}/redeliver", headers=h)
    assert r2.status_code == 409 and r2.json()["code"] == "delivery_pending"
    run_round(settings)
    assert len(receiver.requests) == 2
    assert receiver.requests[0][1]["webhook-id"] == receiver.requests[1][1]["webhook-id"]
    got = client.get(f"/v1/webhook-deliveries/{d.id}", headers=h).json()
    assert got["status"] == "delivered" and len(got["attempt_log"]) == 2
    client.patch(f"/v1/webhook-endpoints/{ep['id']}", headers=h, json={"status": "disabled"})
    r3 = client.post(f"/v1/webhook-deliveries/{d.id}/redeliver", headers=h)
    assert r3.status_code == 409 and r3.json()["code"] == "endpoint_disabled"
    assert factory.count(AuditEvent, AuditEvent.action == "webhook_delivery.redeliver") == 1


def test_delivery_log_filters_and_pages(client, factory, settings, receiver):
    a = factory.facility()
    _c, h = _client(factory, a)
    one = _register(client, h, receiver.url("/one"))
    two = _register(client, h, receiver.url("/two"), ["participant.created",
                                                      "participant.updated"])
    factory.outbox_event("participant.created", facility=a)
    factory.outbox_event("participant.updated", facility=a)
    receiver.script = [200, 500]  # /one gets the first; /two's first fails
    run_round(settings)
    run_round(settings)

    def ids(**params: Any) -> list[str]:
        r = client.get("/v1/webhook-deliveries", headers=h, params=params)
        assert r.status_code == 200, r.text
        return [(i["endpoint_id"], i["event_type"], i["status"]) for i in r.json()["items"]]

    assert len(ids()) == 3
    assert {e for e, _t, _s in ids(endpoint_id=one["id"])} == {one["id"]}
    assert [t for _e, t, _s in ids(event_type="participant.updated")] == ["participant.updated"]
    assert {s for _e, _t, s in ids(status="pending")} == {"pending"}
    assert ids(since=(datetime.now(UTC) + timedelta(hours=1)).isoformat()) == []
    assert len(ids(until=(datetime.now(UTC) + timedelta(hours=1)).isoformat())) == 3
    page = client.get("/v1/webhook-deliveries", headers=h, params={"limit": 2}).json()
    rest = client.get("/v1/webhook-deliveries", headers=h,
                      params={"limit": 2, "cursor": page["next_cursor"]}).json()
    assert len(page["items"]) == 2 and len(rest["items"]) == 1 and rest["next_cursor"] is None
    assert client.get("/v1/webhook-deliveries", headers=h,
                      params={"status": "lost"}).status_code == 422
    assert client.get("/v1/webhook-deliveries", headers=h,
                      params={"cursor": "garbage"}).json()["code"] == "invalid_cursor"
    assert two["id"]


def test_claim_skips_rows_another_worker_holds(factory, settings, is_pg):
    """The claim query itself: rows locked by another transaction are skipped (PostgreSQL)."""
    if not is_pg:
        pytest.skip("FOR UPDATE SKIP LOCKED is PostgreSQL's; SQLite has one writer at a time")
    admin = factory.user(Role.admin)
    ep, _ = factory.webhook_endpoint(admin)
    event = factory.outbox_event("webhook_endpoint.disabled", network=None,
                                 entity_type="webhook_endpoint")
    d = factory.webhook_delivery(ep, event, status="pending")
    with Session(factory.engine) as holder:
        holder.execute(select(WebhookDelivery).where(WebhookDelivery.id == d.id)
                       .with_for_update())

        async def go() -> int:
            engine = make_async_engine(settings)
            try:
                async with make_sessionmaker(engine)() as s:
                    return len(await claim(s, settings, datetime.now(UTC) + timedelta(seconds=1),
                                           NoteCipher.from_settings(settings)))
            finally:
                await engine.dispose()

        assert asyncio.run(go()) == 0
        holder.rollback()
    assert factory.count(OutboxEvent) == 1


def test_a_note_key_rotation_rewraps_webhook_secrets(client, factory, settings, db_url,
                                                      receiver):
    """`peerlink webhooks rewrap` moves every signing secret to the current master key; the old
    key can then go, and deliveries still sign with the same secret."""
    import os
    import subprocess
    import sys

    from pydantic import SecretStr

    from app.security.notes import _dev_key

    a = factory.facility()
    _c, h = _client(factory, a)
    ep = _register(client, h, receiver.url())
    old = base64.b64encode(_dev_key()).decode()
    new = base64.b64encode(os.urandom(32)).decode()
    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING",
           "PEERLINK_NOTE_KEYS": json.dumps({"dev": old, "k2": new}),
           "PEERLINK_NOTE_KEY_ID": "k2"}
    out = subprocess.run([sys.executable, "-m", "app.cli", "webhooks", "rewrap"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == {"rewrapped": 1, "key_id": "k2"}
    rotated = settings.model_copy(update={"note_keys": {"k2": SecretStr(new)},
                                          "note_key_id": "k2"})
    factory.outbox_event("participant.created", facility=a)
    run_round(rotated)
    (_p, headers, body), = receiver.requests
    Webhook(ep["secret"]).verify(body, headers)


def test_the_delivery_log_keeps_finished_deliveries_for_webhook_log_days(settings, factory):
    from app.models import WebhookAttempt
    from app.services.webhook_delivery import purge_log

    admin = factory.user(Role.admin)
    endpoint, _secret = factory.webhook_endpoint(admin)
    old, recent, waiting = (factory.webhook_delivery(endpoint, factory.outbox_event(
        "webhook_endpoint.disabled", network=None, entity_type="webhook_endpoint",
        entity_id=endpoint.id), status=s) for s in ("delivered", "failed", "pending"))
    long_ago = datetime.now(UTC) - timedelta(days=settings.webhook_log_days + 1)
    with Session(factory.engine) as s:
        s.add(WebhookAttempt(delivery_id=old.id, attempted_at=long_ago, status_code=204,
                             duration_ms=3))
        s.execute(update(WebhookDelivery).where(WebhookDelivery.id.in_([old.id, waiting.id]))
                  .values(created_at=long_ago))
        s.commit()

    async def go() -> dict[str, int]:
        engine = make_async_engine(settings)
        try:
            async with make_sessionmaker(engine)() as session:
                return await purge_log(session, settings)
        finally:
            await engine.dispose()

    assert asyncio.run(go()) == {"webhook_deliveries_purged": 1}
    assert factory.get(WebhookDelivery, old.id) is None
    assert factory.count(WebhookAttempt, WebhookAttempt.delivery_id == old.id) == 0
    assert factory.get(WebhookDelivery, recent.id) is not None  # finished, but recent
    assert factory.get(WebhookDelivery, waiting.id) is not None  # old, but still pending
