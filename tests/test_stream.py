"""The live stream as a board or a tablet notices it: the events it may see pushed as they
commit, behind the same walls as the lists; Last-Event-ID resumes without loss or duplicate;
heartbeats; closed when the credentials that opened it are no longer good; single-use tickets
for browsers; and, on PostgreSQL, delivery across API processes."""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from jose import jwt
from sqlalchemy import create_engine, text
from sqlalchemy.orm import Session

from app.models import StreamTicket
from app.models.common import Role
from app.security.passwords import token_digest
from tests.conftest import TEST_KEY

ROOT = Path(__file__).resolve().parent.parent
PROBLEM = "application/problem+json"


@pytest.fixture()
def settings(settings):  # type: ignore[no-untyped-def]
    """Heartbeats every half second, so the checks they carry are seen within a test."""
    return settings.model_copy(update={"stream_heartbeat_seconds": 0.5})


class SSE:
    """A stream held by a client in a thread of its own: messages parsed as they arrive."""

    def __init__(self, base: str, headers: dict[str, str] | None = None,
                 params: dict[str, str] | None = None) -> None:
        self.messages: queue.Queue[dict[str, str]] = queue.Queue()
        self.status: int | None = None
        self.body = b""
        self.headers: dict[str, str] = {}
        self.ended = threading.Event()
        self._ready = threading.Event()
        self._client = httpx.Client(base_url=base, timeout=httpx.Timeout(10, read=None))
        threading.Thread(target=self._run, args=(headers or {}, params or {}),
                         daemon=True).start()
        assert self._ready.wait(15), "the stream did not answer"

    def _run(self, headers: dict[str, str], params: dict[str, str]) -> None:
        try:
            with self._client.stream("GET", "/v1/stream", headers=headers, params=params) as r:
                self.status, self.headers = r.status_code, dict(r.headers)
                if r.status_code != 200:
                    self.body = r.read()
                    return
                self._ready.set()
                msg: dict[str, str] = {}
                for line in r.iter_lines():
                    if line == "":
                        if msg:
                            self.messages.put(msg)
                        msg = {}
                    elif line.startswith(":"):
                        self.messages.put({"comment": line[1:].strip()})
                    else:
                        name, _, value = line.partition(":")
                        msg[name] = value[1:] if value.startswith(" ") else value
        except Exception:  # noqa: S110 (closed by the test, or by the server)
            pass
        finally:
            self.ended.set()
            self._ready.set()

    def next(self, timeout: float = 10) -> dict[str, str]:
        return self.messages.get(timeout=timeout)

    def wait_comment(self, prefix: str, timeout: float = 10) -> None:
        deadline = time.monotonic() + timeout
        while True:
            m = self.next(max(deadline - time.monotonic(), 0.01))
            if m.get("comment", "").startswith(prefix):
                return

    def events(self, n: int, timeout: float = 10) -> list[dict[str, Any]]:
        """The next n events (comments skipped), data parsed."""
        out: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            m = self.next(max(deadline - time.monotonic(), 0.01))
            if "comment" not in m:
                out.append({**m, "data": json.loads(m["data"])})
        return out

    def quiet(self, seconds: float) -> list[dict[str, str]]:
        """Every event that arrives within `seconds` (comments skipped)."""
        got, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                m = self.next(left)
            except queue.Empty:
                break
            if "comment" not in m:
                got.append(m)
        return got

    def close(self) -> None:
        self._client.close()
        self.ended.wait(5)


@pytest.fixture()
def streams() -> Iterator[list[SSE]]:
    opened: list[SSE] = []
    yield opened
    for s in opened:
        s.close()


def _open(opened: list[SSE], base: str, headers: dict[str, str] | None = None,
          live: bool = True, **params: str) -> SSE:
    s = SSE(base, headers, params)
    opened.append(s)
    if live and s.status == 200:
        s.wait_comment("live")
    return s


def _raise(base: str, headers: dict[str, str], person: Any, tier: str = "moderate") -> str:
    """Moderate by default: a high or imminent raise also pages the facility's roster (empty
    here), whose unstaffed-level alerts are events of their own."""
    r = httpx.post(f"{base}/v1/escalations", headers=headers | {
        "Idempotency-Key": str(uuid.uuid4())}, json={
        "participant_id": str(person.id), "category": "self_harm", "description": "seen",
        "tier": tier}, timeout=30)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _post(base: str, path: str, headers: dict[str, str], body: Any = None) -> httpx.Response:
    return httpx.post(f"{base}{path}", headers=headers | {"Idempotency-Key": str(uuid.uuid4())},
                      json=body if body is not None else {}, timeout=30)


# --- delivery and resume --------------------------------------------------------------------

def test_a_board_sees_a_raise_live_and_resumes_after_last_event_id(live_server, factory, streams):
    a = factory.facility()
    person = factory.participant(a)
    officer = factory.headers(factory.user(Role.officer, [a]))
    raiser = factory.headers(factory.user(Role.coordinator, [a]))
    board = _open(streams, live_server, officer)
    assert board.headers["content-type"].startswith("text/event-stream")
    first = _raise(live_server, raiser, person)
    second = _raise(live_server, raiser, person)
    got = board.events(2)
    assert [e["data"]["data"]["id"] for e in got] == [first, second]
    ev = got[0]
    assert ev["event"] == "escalation.created"
    assert set(ev["data"]) == {"id", "type", "occurred_at", "data", "url"}
    assert ev["data"]["url"] == f"/v1/escalations/{first}"
    # id: is the event feed's cursor: the feed resumes from it too.
    page = httpx.get(f"{live_server}/v1/events", params={"after": ev["id"]}, headers=factory
                     .headers(factory.api_client(["escalations:read", "events:read"], [a])))
    assert [i["data"]["id"] for i in page.json()["items"]] == [second]
    board.close()

    # Missed while disconnected: replayed first, then live, nothing twice.
    third = _raise(live_server, raiser, person)
    again = _open(streams, live_server, officer | {"Last-Event-ID": got[1]["id"]}, live=False)
    assert [e["data"]["data"]["id"] for e in again.events(1)] == [third]
    again.wait_comment("live")
    fourth = _raise(live_server, raiser, person)
    assert [e["data"]["data"]["id"] for e in again.events(1)] == [fourth]
    assert again.quiet(0.5) == []
    # `after` (a new EventSource cannot set Last-Event-ID) does the same.
    fresh = _open(streams, live_server, officer, live=False, after=got[0]["id"])
    assert [e["data"]["data"]["id"] for e in fresh.events(3)] == [second, third, fourth]


def test_the_stream_refuses_bad_input_as_problems(live_server, factory, streams):
    a = factory.facility()
    officer = factory.headers(factory.user(Role.officer, [a]))
    for params, headers, code in (({"after": "nope"}, {}, "invalid_cursor"),
                                  ({}, {"Last-Event-ID": "nope"}, "invalid_cursor"),
                                  ({"types": "escalation.created,bogus"}, {}, "unknown_event_type")):
        s = _open(streams, live_server, officer | headers, **params)
        assert s.status == 422 and s.headers["content-type"] == PROBLEM
        assert json.loads(s.body)["code"] == code
    none = _open(streams, live_server)
    assert none.status == 401 and json.loads(none.body)["code"] == "unauthorized"
    auditor = _open(streams, live_server, factory.headers(factory.user(Role.auditor, [a])))
    assert auditor.status == 403 and json.loads(auditor.body)["code"] == "insufficient_scope"


# --- walls ------------------------------------------------------------------------------------

def test_a_stream_carries_only_what_the_caller_may_see(live_server, factory, streams):
    a, b = factory.facility(), factory.facility()
    in_a, in_b = factory.participant(a), factory.participant(b)
    staff_a = factory.participant(a, "staff")
    coordinator_a = factory.headers(factory.user(Role.coordinator, [a]))
    coordinator_b = factory.headers(factory.user(Role.coordinator, [b]))
    staff_coordinator_a = factory.headers(factory.user(Role.staff_coordinator, [a]))
    officer_a = _open(streams, live_server, factory.headers(factory.user(Role.officer, [a])))
    clinician_a = _open(streams, live_server, factory.headers(factory.user(Role.clinician, [a])))
    # A machine client of facility A, incarcerated network, granted only escalations.
    machine = _open(streams, live_server, factory.headers(factory.api_client(
        ["escalations:read", "events:stream"], [a])))
    only_created = _open(streams, live_server, factory.headers(factory.user(Role.officer, [a])),
                         types="escalation.acknowledged")
    _raise(live_server, coordinator_b, in_b)  # another facility: nobody here hears it
    other_network = _raise(live_server, staff_coordinator_a, staff_a)
    # Boards read participants (participants:read), so they hear participant events: of their
    # own facility only.
    r = httpx.patch(f"{live_server}/v1/participants/{in_b.id}", headers=coordinator_b,
                    json={"preferred_name": "B"}, timeout=30)
    assert r.status_code == 200, r.text
    mine = _raise(live_server, coordinator_a, in_a)
    # The marker arrives last: whatever was not delivered before it was filtered out.
    assert [e["data"]["data"]["id"] for e in officer_a.events(1)] == [mine]
    assert [e["data"]["data"]["id"] for e in machine.events(1)] == [mine]
    seen = [e["data"]["data"]["id"] for e in clinician_a.events(2)]
    assert seen == [other_network, mine]  # a clinician works both networks of their facility
    ack = _post(live_server, f"/v1/escalations/{mine}/acknowledge", coordinator_a)
    assert ack.status_code == 200, ack.text
    assert [e["event"] for e in only_created.events(1)] == ["escalation.acknowledged"]
    for s in (officer_a, machine, clinician_a):
        assert [e["event"] for e in s.events(1)] == ["escalation.acknowledged"]
        assert s.quiet(0.3) == []


def test_a_peer_supporters_tablet_hears_only_the_status_of_what_they_raised(
        live_server, factory, streams):
    a = factory.facility()
    me = factory.participant(a, is_supporter=True)
    them = factory.participant(a, is_supporter=True)
    recipient = factory.recipient(a)
    factory.pairing(me, recipient)
    factory.pairing(them, factory.recipient(a))
    peer = factory.headers(factory.user(Role.peer_supporter, [a], participant=me))
    other_peer = factory.headers(factory.user(Role.peer_supporter, [a], participant=them))
    clinician = factory.headers(factory.user(Role.clinician, [a]))
    tablet = _open(streams, live_server, peer)
    theirs = _raise(live_server, other_peer, them)
    by_staff = _raise(live_server, clinician, recipient)  # about my recipient, raised by staff
    mine = _raise(live_server, peer, recipient)
    assert [(e["event"], e["data"]["data"]["id"]) for e in tablet.events(1)] == [
        ("escalation.created", mine)]
    resolve = {"outcome": "ok", "follow_up_plan": "daily check-in", "review_date": "2030-01-01"}
    for step, body in (("tier", {"tier": "high", "reason": "worse"}), ("assign", None),
                       ("acknowledge", None), ("resolve", resolve)):
        if step == "assign":
            body = {"user_id": str(factory.user(Role.clinician, [a]).id)}
        r = _post(live_server, f"/v1/escalations/{mine}/{step}", clinician, body)
        assert r.status_code == 200, r.text
    for other in (theirs, by_staff):
        assert _post(live_server, f"/v1/escalations/{other}/acknowledge", clinician) \
            .status_code == 200
    got = tablet.events(2)
    assert [(e["event"], e["data"]["data"]["id"]) for e in got] == [
        ("escalation.acknowledged", mine), ("escalation.resolved", mine)]
    assert tablet.quiet(0.3) == []


# --- heartbeats and closing -------------------------------------------------------------------

def test_heartbeats_and_a_revoked_token_closes_the_stream(live_server, factory, streams):
    a = factory.facility()
    officer = factory.user(Role.officer, [a])
    token = factory.token(officer)
    s = _open(streams, live_server, {"Authorization": f"Bearer {token}"})
    s.wait_comment("heartbeat", timeout=5)
    s.wait_comment("heartbeat", timeout=5)
    r = httpx.post(f"{live_server}/v1/auth/revoke", data={"token": token}, timeout=30)
    assert r.status_code == 200
    s.wait_comment("closed", timeout=5)
    assert s.ended.wait(5)


def test_a_deactivated_account_loses_its_stream(live_server, factory, streams):
    a = factory.facility()
    officer = factory.user(Role.officer, [a])
    s = _open(streams, live_server, factory.headers(officer))
    admin = factory.headers(factory.user(Role.admin, None))
    r = _post(live_server, f"/v1/users/{officer.id}/deactivate", admin)
    assert r.status_code == 200, r.text
    s.wait_comment("closed", timeout=5)
    assert s.ended.wait(5)


def test_a_stream_ends_when_the_token_that_opened_it_expires(live_server, factory, streams,
                                                              app, settings):
    a = factory.facility()
    officer = factory.user(Role.officer, [a])
    now = int(time.time())
    claims = {"iss": settings.issuer, "aud": settings.audience, "sub": str(officer.id),
              "iat": now, "nbf": now, "exp": now + 4, "jti": str(uuid.uuid4()),
              "scope": "escalations:read events:stream", "sub_kind": "user",
              "role": "officer", "facilities": [str(a.id)]}
    keyring = app.state.keyring
    token = jwt.encode(claims, keyring.signing_pem, algorithm="ES256",
                       headers={"kid": keyring.signing_kid, "typ": "at+jwt"})
    s = _open(streams, live_server, {"Authorization": f"Bearer {token}"})
    assert s.status == 200
    s.wait_comment("closed", timeout=10)
    assert time.time() >= now + 4
    assert s.ended.wait(5)


def test_a_reader_that_falls_behind_is_dropped_not_buffered(client, factory, app):
    """The hub never waits for a stream: a full queue drops its subscriber (the stream then
    closes, and the client resumes with Last-Event-ID); other subscribers are unaffected."""
    a = factory.facility()
    person = factory.participant(a)
    officer = factory.user(Role.officer, [a])
    raiser = factory.headers(factory.user(Role.coordinator, [a]))
    hub = app.state.streams.hub
    hub.queue_size = size = 10  # PEERLINK_STREAM_QUEUE_SIZE's least
    principal = client.portal.call(_principal_of, app, factory.token(officer))
    slow = client.portal.call(hub.subscribe, principal)
    ok = client.portal.call(hub.subscribe, principal)
    for _ in range(size + 5):
        r = client.post("/v1/escalations", headers=raiser | {"Idempotency-Key": str(uuid.uuid4())},
                        json={"participant_id": str(person.id), "category": "self_harm",
                              "description": "seen", "tier": "low"})
        assert r.status_code == 201
        # The reader that keeps up takes each raise's events once the hub has delivered them
        # (the hub's round runs on its own time, after the answer).
        waited = time.monotonic() + 5
        while not ok.queue.qsize() and not ok.dropped and time.monotonic() < waited:
            time.sleep(0.01)
        time.sleep(0.02)
        client.portal.call(_drain, ok)
    deadline = time.monotonic() + 10
    while not slow.dropped and time.monotonic() < deadline:
        time.sleep(0.05)
    assert slow.dropped and slow.queue.qsize() == size
    assert not ok.dropped


@pytest.mark.parametrize("per_statement", [400, 3])
def test_one_round_serves_many_walls_exactly_with_one_statement(client, factory, app,
                                                                 monkeypatch, per_statement):
    """Many subscribers with different walls (facilities, networks, roles, a type filter, peer
    tablets of their own raises) are served a batch of events in one round of one statement,
    each exactly what the feed's rule (events.event_clauses, asked per subscriber) lets them
    see, in id order. (With at most 3 groups a statement, as past the columns a SELECT may
    have: a statement per 3 groups, the same answer.)"""
    from app.services.stream import hub as hub_module
    from app.services.stream.hub import Hub

    monkeypatch.setattr(hub_module, "GROUPS_PER_STATEMENT", per_statement)

    a, b = factory.facility(), factory.facility()
    in_a, in_b, staff_a = (factory.participant(a), factory.participant(b),
                           factory.participant(a, "staff"))
    me, them = (factory.participant(a, is_supporter=True),
                factory.participant(a, is_supporter=True))
    peer_me = factory.user(Role.peer_supporter, [a], participant=me)
    peer_them = factory.user(Role.peer_supporter, [a], participant=them)
    coordinator_a, coordinator_b = (factory.user(Role.coordinator, [a]),
                                    factory.user(Role.coordinator, [b]))
    staff_coordinator = factory.user(Role.staff_coordinator, [a])
    officer_a = factory.user(Role.officer, [a])
    tokens = {
        "officer_a": factory.token(officer_a),
        "officer_a_again": factory.token(officer_a),  # a second board of the same account
        "officer_b": factory.token(factory.user(Role.officer, [b])),
        "clinician_a": factory.token(factory.user(Role.clinician, [a])),
        "coordinator_everywhere": factory.token(factory.user(Role.coordinator, None)),
        "coordinator_b": factory.token(coordinator_b),
        "peer_me": factory.token(peer_me),
        "peer_them": factory.token(peer_them),
        "machine_a": factory.token(factory.api_client(["escalations:read", "events:stream"],
                                                      [a])),
    }
    engine = app.state.streams.app_engine
    hub = client.portal.call(_started_hub, Hub, engine)
    try:
        subs = {name: client.portal.call(hub.subscribe,
                                         client.portal.call(_principal_of, app, token))
                for name, token in tokens.items()}
        subs["acks_only_a"] = client.portal.call(
            hub.subscribe, client.portal.call(_principal_of, app, tokens["officer_a"]),
            ["escalation.acknowledged"])
        assert len(hub.groups) == len(subs) - 1  # the officer's two boards share one group
        before = client.portal.call(_newest, engine)
        hub.position = hub.target = before  # the hub stays asleep: nobody notifies it
        raised = []
        for raiser, person in ((coordinator_a, in_a), (coordinator_b, in_b),
                               (staff_coordinator, staff_a), (peer_me, in_a),
                               (peer_them, in_a)):
            raised.append(_raise_in(client, factory.headers(raiser), person))
        r = client.patch(f"/v1/participants/{in_b.id}", headers=factory.headers(coordinator_b),
                         json={"preferred_name": "B"})
        assert r.status_code == 200, r.text
        for esc in (raised[0], raised[3]):
            r = client.post(f"/v1/escalations/{esc}/acknowledge", headers=factory.headers(
                coordinator_a) | {"Idempotency-Key": str(uuid.uuid4())}, json={})
            assert r.status_code == 200, r.text
        newest = client.portal.call(_newest, engine)
        rounds, statements = hub.rounds, hub.statements
        client.portal.call(hub.notified, str(newest))
        deadline = time.monotonic() + 10
        while hub.position < newest and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hub.position == newest
        assert hub.rounds - rounds == 1
        assert hub.statements - statements == -(-len(hub.groups) // per_statement)
        got = {name: client.portal.call(_queued, sub) for name, sub in subs.items()}
        want = {name: client.portal.call(_may_see, engine, sub, before, newest)
                for name, sub in subs.items()}
        assert got == want
        # Not vacuous: the walls differ, and peers hear only their own raises' status.
        assert got["officer_a"] and got["officer_b"] and got["acks_only_a"]
        assert got["officer_a"] != got["officer_b"] != got["coordinator_everywhere"]
        assert got["peer_me"] != got["peer_them"]
        assert got["officer_a"] == got["officer_a_again"]
    finally:
        client.portal.call(hub.stop)


def _raise_in(client: Any, headers: dict[str, str], person: Any) -> str:
    r = client.post("/v1/escalations", headers=headers | {"Idempotency-Key": str(uuid.uuid4())},
                    json={"participant_id": str(person.id), "category": "self_harm",
                          "description": "seen", "tier": "moderate"})
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


async def _started_hub(hub_type: Any, engine: Any) -> Any:
    hub = hub_type(engine, queue_size=1_000)
    await hub.start()
    return hub


async def _newest(engine: Any) -> int:
    from app.db import make_sessionmaker
    from app.services import events

    async with make_sessionmaker(engine)() as session:
        return await events.newest_id(session)


async def _may_see(engine: Any, sub: Any, after: int, upto: int) -> list[int]:
    """The reference: the feed's rule asked for this one subscriber."""
    from sqlalchemy import select

    from app.db import make_sessionmaker
    from app.services import events
    from app.services.events import OE

    async with make_sessionmaker(engine)() as session:
        return list((await session.execute(
            select(OE.id).where(OE.id > after, OE.id <= upto,
                                *events.event_clauses(sub.principal, sub.types))
            .order_by(OE.id))).scalars())


async def _queued(sub: Any) -> list[int]:
    out = []
    while not sub.queue.empty():
        out.append(sub.queue.get_nowait().id)
    return out


async def _principal_of(app: Any, token: str) -> Any:
    from app.security.principal import resolve

    return await resolve(app.state, token)


async def _drain(sub: Any) -> None:
    while not sub.queue.empty():
        sub.queue.get_nowait()


# --- tickets ----------------------------------------------------------------------------------

def test_a_browser_opens_the_stream_with_a_single_use_ticket(live_server, factory, streams):
    a = factory.facility()
    person = factory.participant(a)
    officer = factory.headers(factory.user(Role.officer, [a]))
    r = _post(live_server, "/v1/stream/tickets", officer)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    ticket = r.json()["ticket"]
    expires = datetime.fromisoformat(r.json()["expires_at"].replace("Z", "+00:00"))
    assert timedelta(seconds=25) < expires - datetime.now(UTC) <= timedelta(seconds=30)
    assert factory.count(StreamTicket) == 1
    with Session(factory.engine) as s:  # stored hashed, never in clear
        stored = s.scalars(text("SELECT id FROM stream_ticket")).all()
    assert stored == [token_digest(ticket)] and ticket not in stored
    browser = _open(streams, live_server, ticket=ticket)
    assert browser.status == 200
    raised = _raise(live_server, factory.headers(factory.user(Role.coordinator, [a])), person)
    assert [e["data"]["data"]["id"] for e in browser.events(1)] == [raised]
    # Used: refused, from this process or any other (the row is gone).
    again = _open(streams, live_server, ticket=ticket)
    assert again.status == 401 and again.headers["content-type"] == PROBLEM
    assert json.loads(again.body)["code"] == "invalid_stream_ticket"
    assert factory.count(StreamTicket) == 0
    # A ticket is no bearer token, and a bearer token is no ticket.
    wrong = _open(streams, live_server, ticket="stk_" + "x" * 43)
    assert wrong.status == 401 and json.loads(wrong.body)["code"] == "invalid_stream_ticket"
    r = httpx.get(f"{live_server}/v1/events", headers={"Authorization": f"Bearer {ticket}"})
    assert r.status_code == 401


def test_an_expired_ticket_is_refused(live_server, factory, streams):
    a = factory.facility()
    officer = factory.user(Role.officer, [a])
    ticket = "stk_expired-" + uuid.uuid4().hex
    factory._save(StreamTicket(id=token_digest(ticket), claims={"sub": str(officer.id)},
                               expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    s = _open(streams, live_server, ticket=ticket)
    assert s.status == 401 and json.loads(s.body)["code"] == "invalid_stream_ticket"
    assert factory.count(StreamTicket) == 0  # consumed all the same


def test_tickets_need_the_scope_and_never_reach_the_logs(client, factory, caplog):
    a = factory.facility()
    r = client.post("/v1/stream/tickets", headers=factory.headers(factory.user(Role.auditor, [a])))
    assert r.status_code == 403 and r.json()["code"] == "insufficient_scope"
    assert client.post("/v1/stream/tickets").status_code == 401
    officer = factory.headers(factory.user(Role.officer, [a]))
    caplog.set_level(logging.INFO, logger="peerlink.access")
    ticket = client.post("/v1/stream/tickets", headers=officer).json()["ticket"]
    from sqlalchemy import delete

    with Session(factory.engine) as s:  # used up elsewhere: the GET answers at once (401)
        s.execute(delete(StreamTicket))
        s.commit()
    r = client.get("/v1/stream", params={"ticket": ticket})
    assert r.status_code == 401
    lines = [(rec.getMessage(), json.dumps(rec.__dict__, default=str)) for rec in caplog.records]
    assert any('"route": "/v1/stream"' in d for _m, d in lines)
    assert not any(ticket in m or ticket in d for m, d in lines)
    token = officer["Authorization"].split()[1]
    assert not any(token in d for _m, d in lines)


# --- connections, and across processes (PostgreSQL) -------------------------------------------

def test_streams_hold_no_database_connection(live_server, factory, streams, settings, is_pg):
    a = factory.facility()
    person = factory.participant(a)
    headers = factory.headers(factory.user(Role.officer, [a]))
    many = 2 * settings.db_pool_size + 5  # more than both pools could lend
    boards = [_open(streams, live_server, headers) for _ in range(many)]
    raised = _raise(live_server, factory.headers(factory.user(Role.coordinator, [a])), person)
    for board in boards:
        assert [e["data"]["data"]["id"] for e in board.events(1)] == [raised]
    r = httpx.get(f"{live_server}/v1/escalations/{raised}", headers=headers, timeout=5)
    assert r.status_code == 200
    if is_pg:
        engine = create_engine(settings.sync_database_url)
        with engine.connect() as conn:
            backends = conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            )).scalar_one()
        engine.dispose()
        assert backends < many


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def second_process(settings, is_pg) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """Another API process on the same database (uvicorn, as production runs it)."""
    if not is_pg:
        pytest.skip("several API processes share a PostgreSQL database; SQLite is one process")
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PEERLINK_")}
    env.update(PEERLINK_DATABASE_URL=settings.database_url, PEERLINK_MODE="development",
               PEERLINK_JWT_PRIVATE_KEY=TEST_KEY, PEERLINK_LOG_LEVEL="WARNING",
               PEERLINK_EMBEDDED_WORKER="false", PEERLINK_STREAM_HEARTBEAT_SECONDS="0.5",
               PEERLINK_RATE_LIMIT_STORAGE="memory://")
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host",
         "127.0.0.1", "--port", str(port), "--no-access-log", "--log-level", "warning"],
        cwd=ROOT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120  # a loaded machine starts Python slowly
        while True:
            try:
                if httpx.get(f"{base}/livez", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "did not start"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_a_raise_through_one_process_reaches_a_stream_on_another(
        live_server, second_process, factory, streams):
    a = factory.facility()
    person = factory.participant(a)
    officer = factory.headers(factory.user(Role.officer, [a]))
    raiser = factory.headers(factory.user(Role.coordinator, [a]))
    here = _open(streams, live_server, officer)
    there = _open(streams, second_process, officer)
    first = _raise(second_process, raiser, person)
    t0 = time.monotonic()
    assert [e["data"]["data"]["id"] for e in here.events(1)] == [first]
    assert time.monotonic() - t0 < 1.0
    assert [e["data"]["data"]["id"] for e in there.events(1)] == [first]
    second = _raise(live_server, raiser, person)
    got = here.events(1)
    last_id = got[0]["id"]
    assert [e["data"]["data"]["id"] for e in got] == [second]
    here.close()
    # Resumed on the other process: what came after the last id seen, then live.
    third = _raise(live_server, raiser, person)
    moved = _open(streams, second_process, officer | {"Last-Event-ID": last_id}, live=False)
    assert [e["data"]["data"]["id"] for e in moved.events(1)] == [third]
    moved.wait_comment("live")
    fourth = _raise(live_server, raiser, person)
    assert [e["data"]["data"]["id"] for e in moved.events(1)] == [fourth]
    assert moved.quiet(0.5) == []
    # A ticket from one process opens the stream on the other.
    ticket = _post(live_server, "/v1/stream/tickets", officer).json()["ticket"]
    assert _open(streams, second_process, ticket=ticket).status == 200
    assert _open(streams, live_server, ticket=ticket).status == 401


def test_the_hub_catches_up_after_its_listen_connection_drops(
        live_server, second_process, factory, streams, settings):
    a = factory.facility()
    person = factory.participant(a)
    officer = factory.headers(factory.user(Role.officer, [a]))
    raiser = factory.headers(factory.user(Role.coordinator, [a]))
    board = _open(streams, live_server, officer)
    engine = create_engine(settings.sync_database_url)
    with engine.connect() as conn:
        killed = conn.execute(text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
            "datname = current_database() AND application_name = 'peerlink-listen'")).scalar_one()
    engine.dispose()
    assert killed >= 2  # both processes' listeners
    # Raised while this process is not listening: its NOTIFY reaches nobody here.
    raised = _raise(second_process, raiser, person)
    assert [e["data"]["data"]["id"] for e in board.events(1, timeout=10)] == [raised]
