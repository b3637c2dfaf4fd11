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
def app(settings: Settings):  # type: ignore[no-untyped-def]
    """One routine request at a time: the second waits while the first is held."""
    return create_app(settings.model_copy(update={"admission_routine_limit": 1}))


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


def _scope(method: str, path: str) -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


def test_routine_requests_take_their_turn_in_arrival_order(app):
    """The queueing itself, with a stand-in for the app behind the middleware: first come,
    first served; a crisis request never waits; a waiter that goes away hands its turn on."""

    async def scenario() -> list[str]:
        entered: list[str] = []
        gates: dict[str, asyncio.Event] = {}

        async def inner(scope: Any, receive: Any, send: Any) -> None:
            name = scope["name"]
            entered.append(name)
            gates[name] = asyncio.Event()
            await gates[name].wait()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b""})

        mw = AdmissionMiddleware(inner, limit=1,
                                 crisis=marked(api_routes(app.routes), crisis_workflow))

        async def noop(_: Any) -> None:
            return None

        def request(name: str, method: str, path: str) -> asyncio.Task[None]:
            return asyncio.ensure_future(mw(_scope(method, path) | {"name": name}, noop, noop))

        async def settle() -> None:
            for _ in range(5):
                await asyncio.sleep(0)

        tasks = {"a": request("a", "PUT", "/v1/participants/by-external-id/jms/1")}
        await settle()
        for name in ("b", "c", "d"):
            tasks[name] = request(name, "GET", f"/v1/participants/{uuid.uuid4()}")
            await settle()
        tasks["raise"] = request("raise", "POST", "/v1/escalations")
        await settle()
        assert entered == ["a", "raise"]  # b, c, d wait; the raise did not
        tasks["c"].cancel()  # c's client went away
        gates["raise"].set()
        gates["a"].set()
        await settle()
        assert entered == ["a", "raise", "b"]
        gates["b"].set()
        await settle()
        assert entered == ["a", "raise", "b", "d"]  # c's turn went to d
        gates["d"].set()
        await settle()
        assert mw.running == 0 and not mw.waiting
        return entered

    asyncio.run(scenario())
