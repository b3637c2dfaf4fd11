"""Crisis first in each API process (app/admission.py): routine requests run a bounded number at
a time and queue in arrival order; the crisis workflow's routes, from their marks, go straight
through, on both databases."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from typing import Any

import httpx
import pytest

from app.admission import AdmissionMiddleware
from app.config import Settings
from app.main import create_app
from app.models.common import Role
from app.routemarks import api_routes, crisis_workflow, marked


@pytest.fixture()
def app(settings: Settings, request):  # type: ignore[no-untyped-def]
    """One routine request at a time: the second waits while the first is held (at most the
    `queue_seconds` mark's seconds, if the test has one)."""
    mark = request.node.get_closest_marker("queue_seconds")
    return create_app(settings.model_copy(update={
        "admission_routine_limit": 1,
        **({"admission_queue_seconds": mark.args[0]} if mark else {})}))


def test_the_app_admits_by_the_crisis_marks(app):
    found = [m for m in app.user_middleware if m.cls is AdmissionMiddleware]
    assert len(found) == 1
    assert found[0].kwargs["crisis"] == marked(api_routes(app.routes), crisis_workflow)
    assert found[0].kwargs["limit"] == 1


def test_the_limit_leaves_connections_for_crisis_work():
    with pytest.raises(ValueError, match="admission_routine_limit"):
        Settings(db_pool_size=4, admission_routine_limit=4)


def test_crisis_goes_through_while_routine_work_queues(live_server, factory):
    f = factory.facility()
    factory.participant(f, external=("jms", "HELD1"))
    other = factory.participant(f)
    h = factory.headers(factory.user(Role.coordinator, [f]))
    results: dict[str, Any] = {}

    def call(name: str, method: str, path: str, **kw: Any) -> None:
        results[name] = httpx.request(method, live_server + path, headers=h | kw.pop("h", {}),
                                      timeout=30, **kw)

    # A routine write whose client sends half its body and stalls: it holds the one slot.
    body = json.dumps({"network": "incarcerated", "legal_name": "Moved",
                       "facility_code": f.code}).encode()
    host, port = live_server.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=30)
    slow.sendall((f"PUT /v1/participants/by-external-id/jms/HELD1 HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: {h['Authorization']}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:10])
    read = threading.Thread(target=call, args=("read", "GET", f"/v1/participants/{other.id}"))
    try:
        time.sleep(1.0)  # the write is admitted, waiting for the rest of its body
        read.start()
        read.join(timeout=1.5)
        assert read.is_alive(), "a routine read ran beside the held routine write"
        # The crisis workflow does not queue: the board, and a raise.
        call("board", "GET", "/v1/escalations?status=open")
        assert results["board"].status_code == 200
        call("raise", "POST", "/v1/escalations", h={"Idempotency-Key": str(uuid.uuid4())},
             json={"participant_id": str(other.id), "category": "suicide_risk",
                   "tier": "imminent", "description": "Said they have a plan."})
        assert results["raise"].status_code == 201, results["raise"].text
        assert read.is_alive()
        slow.sendall(body[10:])  # the write completes, and the read takes its turn
        answer = slow.recv(65536)
        assert answer.startswith(b"HTTP/1.1 20"), answer[:200]
    finally:
        slow.close()
    read.join(timeout=20)
    assert results["read"].status_code == 200


def _stall_a_routine_write(live_server: str, f: Any, h: dict[str, str]) -> socket.socket:
    """A routine write whose client sends half its body and stalls: it holds the one slot."""
    body = json.dumps({"network": "incarcerated", "legal_name": "Moved",
                       "facility_code": f.code}).encode()
    host, port = live_server.removeprefix("http://").split(":")
    slow = socket.create_connection((host, int(port)), timeout=30)
    slow.sendall((f"PUT /v1/participants/by-external-id/jms/HELD1 HTTP/1.1\r\nHost: x\r\n"
                  f"Authorization: {h['Authorization']}\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {len(body)}\r\n\r\n").encode() + body[:10])
    return slow


@pytest.mark.queue_seconds(1.0)
def test_a_routine_request_waits_a_bounded_time_then_gets_503_and_changes_nothing(
        live_server, factory):
    f = factory.facility()
    factory.participant(f, external=("jms", "HELD1"))
    other = factory.participant(f)
    h = factory.headers(factory.user(Role.coordinator, [f]))
    slow = _stall_a_routine_write(live_server, f, h)
    try:
        time.sleep(1.0)  # the write is admitted, waiting for the rest of its body
        r = httpx.patch(f"{live_server}/v1/participants/{other.id}", headers=h,
                        json={"preferred_name": "Queued"}, timeout=30)
        assert r.status_code == 503
        assert r.headers["content-type"] == "application/problem+json"
        assert r.json()["code"] == "overloaded" and r.json()["status"] == 503
        assert int(r.headers["Retry-After"]) >= 1
        # Crisis work does not queue, so it is never turned away.
        raised = httpx.post(f"{live_server}/v1/escalations", headers=h | {
            "Idempotency-Key": str(uuid.uuid4())}, json={
            "participant_id": str(other.id), "category": "suicide_risk", "tier": "imminent",
            "description": "Said they have a plan."}, timeout=30)
        assert raised.status_code == 201, raised.text
    finally:
        slow.close()
    got = httpx.get(f"{live_server}/v1/participants/{other.id}", headers=h, timeout=30)
    assert got.status_code == 200 and got.json()["preferred_name"] != "Queued"


def test_a_waiter_that_times_out_leaves_the_queue_and_the_order_holds(app):
    """With a stand-in app: b's wait runs out (503, it never entered); c, behind it, still
    gets its turn; the counts return to zero."""

    async def scenario() -> None:
        st = _Stage(app, limit=1, queue_seconds=0.2)
        await st.arrive("a", "PUT", "/v1/participants/by-external-id/jms/1")
        await st.arrive("b", "GET", f"/v1/participants/{uuid.uuid4()}")
        await asyncio.sleep(0.1)
        await st.arrive("c", "GET", f"/v1/participants/{uuid.uuid4()}")
        await asyncio.wait_for(st.tasks["b"], 5)
        assert st.statuses["b"] == 503 and st.entered == ["a"]
        assert len(st.mw.waiting) == 1
        await st.answer("a")
        assert st.entered == ["a", "c"]
        await st.answer("c")
        assert st.mw.running == 0 and not st.mw.waiting

    asyncio.run(scenario())


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


class _Stage:
    """The middleware in front of a stand-in app whose requests each wait for a gate: which
    requests got in, in which order."""

    def __init__(self, app: Any, limit: int, queue_seconds: float = 60) -> None:
        self.entered: list[str] = []
        self.statuses: dict[str, int] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.mw = AdmissionMiddleware(self.inner, limit=limit,
                                      crisis=marked(api_routes(app.routes), crisis_workflow),
                                      queue_seconds=queue_seconds)

    async def inner(self, scope: Any, receive: Any, send: Any) -> None:
        self.entered.append(scope["name"])
        self.gates[scope["name"]] = asyncio.Event()
        await self.gates[scope["name"]].wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def arrive(self, name: str, method: str, path: str) -> None:
        async def noop(_: Any = None) -> Any:
            return None

        async def send(message: Any) -> None:
            if message["type"] == "http.response.start":
                self.statuses[name] = message["status"]

        self.tasks[name] = asyncio.ensure_future(
            self.mw(_scope(method, path) | {"name": name}, noop, send))
        await self.settle()

    async def answer(self, *names: str) -> None:
        for name in names:
            self.gates[name].set()
        await self.settle()

    @staticmethod
    async def settle() -> None:
        for _ in range(5):
            await asyncio.sleep(0)


def test_while_crisis_work_runs_no_new_routine_work_starts_beside_it(app):
    async def scenario() -> None:
        st = _Stage(app, limit=3)
        await st.arrive("a", "PUT", "/v1/participants/by-external-id/jms/1")
        await st.arrive("b", "GET", f"/v1/participants/{uuid.uuid4()}")
        await st.arrive("raise", "POST", "/v1/escalations")
        await st.arrive("c", "GET", f"/v1/participants/{uuid.uuid4()}")
        assert st.entered == ["a", "b", "raise"]  # c waits: the raise is in flight
        await st.answer("a")
        assert st.entered == ["a", "b", "raise"]  # one routine request runs beside a raise
        await st.answer("raise")
        assert st.entered == ["a", "b", "raise", "c"]  # back to the full limit
        await st.answer("b", "c")
        assert st.mw.running == 0 and st.mw.crises == 0 and not st.mw.waiting

    asyncio.run(scenario())


def test_routine_requests_take_their_turn_in_arrival_order(app):
    """The queueing itself, with a stand-in for the app behind the middleware: first come,
    first served; a crisis request never waits; a waiter that goes away hands its turn on."""

    async def scenario() -> None:
        st = _Stage(app, limit=1)
        await st.arrive("a", "PUT", "/v1/participants/by-external-id/jms/1")
        for name in ("b", "c", "d"):
            await st.arrive(name, "GET", f"/v1/participants/{uuid.uuid4()}")
        await st.arrive("raise", "POST", "/v1/escalations")
        assert st.entered == ["a", "raise"]  # b, c, d wait; the raise did not
        st.tasks["c"].cancel()  # c's client went away
        await st.answer("raise", "a")
        assert st.entered == ["a", "raise", "b"]
        await st.answer("b")
        assert st.entered == ["a", "raise", "b", "d"]  # c's turn went to d
        await st.answer("d")
        assert st.mw.running == 0 and not st.mw.waiting

    asyncio.run(scenario())
