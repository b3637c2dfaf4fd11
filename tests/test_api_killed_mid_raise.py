"""An API process killed (SIGKILL, no chance to clean up) in the middle of raising an
escalation, then restarted: the raiser's retry with the same Idempotency-Key is answered at
once, never a 409 for the lease's 60 s nor "outcome unknown" for the key's 24 h.

(a) killed before the business commit: the retry takes the dead process's key over and raises
    the escalation, once;
(b) killed after the business commit, before the answer was stored: the retry answers the
    saved escalation (same id, Location, as the raiser sees it, `Idempotent-Replayed: true`);
    nothing is raised, emitted or audited twice.

The real API (`uvicorn app.main:create_app --factory`, a subprocess) runs against the test
database and is stopped at the kill point deterministically, without touching its code:
- PostgreSQL: (a) the test holds `LOCK TABLE escalation IN SHARE MODE`: the raise, its key
  claimed, waits at its INSERT; the test sees the wait in pg_stat_activity and kills it there.
  (b) the same, then the test takes the claim row FOR KEY SHARE and lets the raise go on: its
  business transaction marks the claim committed (a non-key UPDATE, which KEY SHARE lets
  through) and commits; storing the answer takes the row FOR UPDATE and waits for the test:
  killed there.
- SQLite: every transaction takes the database's write lock (BEGIN IMMEDIATE). The test takes
  the lock between two of the server's transactions, as soon as the server lets go of it, and
  reads the claim: the server is stopped before its next transaction. Holding it while the
  claim is `in_flight` is (a): the claim committed, the raise not; while it is `committed`
  and unanswered, (b).
Waiting for the subprocess is a bounded poll.
"""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import bindparam, create_engine, select, text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session

from app.models import Escalation, IdempotencyKey
from app.models.common import Role
from app.services.audit import verify_chain
from app.services.idempotency import _LIVENESS_NS

DEADLINE = 60.0


def _until(what: str, done: Callable[[], bool], proc: subprocess.Popen | None = None,
           timeout: float = DEADLINE, pause: float = 0.002,
           why: Callable[[], Any] = lambda: None) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the API exited ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {why()}"
        time.sleep(pause)


class Api:
    """The API in a process of its own, on the test database."""

    def __init__(self, db_url: str, settings: Any) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = int(s.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_MODE": "development",
               "PEERLINK_JWT_PRIVATE_KEY": settings.jwt_private_key.get_secret_value(),
               "PEERLINK_EMBEDDED_WORKER": "false", "PEERLINK_LOG_LEVEL": "WARNING",
               "PEERLINK_RATE_LIMIT_STORAGE": "memory://"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
             "--host", "127.0.0.1", "--port", str(self.port), "--log-level", "warning"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

        def up() -> bool:
            try:
                return httpx.get(f"{self.url}/livez", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        _until("the API to start", up, self.proc, pause=0.05)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=15)
        assert self.proc.returncode == -signal.SIGKILL

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=15)


class Raise:
    """The raiser's request, sent from a thread: it never gets an answer (its server is
    killed)."""

    def __init__(self, api: Api, headers: dict[str, str], body: dict[str, Any]) -> None:
        self.outcome: list[Any] = []

        def send() -> None:
            try:
                self.outcome.append(httpx.post(f"{api.url}/v1/escalations", json=body,
                                               headers=headers, timeout=DEADLINE))
            except httpx.HTTPError as exc:
                self.outcome.append(exc)

        self.thread = threading.Thread(target=send, daemon=True)
        self.thread.start()

    def lost(self) -> None:
        self.thread.join(timeout=15)
        assert len(self.outcome) == 1 and isinstance(self.outcome[0], httpx.HTTPError), \
            self.outcome


def _claim(engine: Engine, key: str) -> IdempotencyKey | None:
    with Session(engine) as s:
        return s.execute(select(IdempotencyKey).where(IdempotencyKey.key == key)) \
            .scalar_one_or_none()


# --- PostgreSQL: stopped by the locks it needs --------------------------------------------------

_WAITING = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock' AND wait_event IN :events") \
    .bindparams(bindparam("events", expanding=True))
_IN_TRANSACTION = text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                       "current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL")
_ACTIVITY = text("SELECT state, wait_event_type, wait_event, left(query, 80) FROM "
                 "pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
_HOLDS = text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = :ns "
              "AND objid = :k AND objsubid = 2 AND granted")


def _kill_pg(api: Api, engine: Engine, key: str, send: Callable[[], Raise],
             after_commit: bool) -> None:
    with engine.connect() as table_lock, engine.connect() as row_lock, \
            engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
        table_lock.execute(text("LOCK TABLE escalation IN SHARE MODE"))
        request = send()
        _until("the raise to wait at its INSERT",
               lambda: probe.execute(_WAITING, {"events": ["relation"]}).scalar_one() == 1,
               api.proc)
        claim = _claim(engine, key)
        assert claim is not None and claim.state == "in_flight" and claim.holder
        if after_commit:
            row_lock.execute(select(IdempotencyKey.id).where(IdempotencyKey.key == key)
                             .with_for_update(read=True, key_share=True))  # FOR KEY SHARE
            table_lock.rollback()
            # (a row lock is waited for on its holder's transaction id, or on the tuple)
            _until("the answer to wait to be stored", lambda: probe.execute(
                _WAITING, {"events": ["transactionid", "tuple"]}).scalar_one() == 1
                and _state(engine, key) == "committed", api.proc,
                why=lambda: (_state(engine, key), probe.execute(_ACTIVITY).all()))
        api.kill()
        table_lock.rollback()
        row_lock.rollback()
        request.lost()
        # The server finds its client gone: the transaction it was in rolls back, and the
        # process's liveness lock goes with its connection.
        _until("the killed API's transactions to end",
               lambda: probe.execute(_IN_TRANSACTION).scalar_one() == 0)
        holder_key = int(claim.holder.partition(".")[0])
        _until("the killed API's liveness lock to go", lambda: probe.execute(
            _HOLDS, {"ns": _LIVENESS_NS, "k": holder_key}).scalar_one() == 0)


def _state(engine: Engine, key: str) -> str | None:
    claim = _claim(engine, key)
    return claim.state if claim else None


# --- SQLite: stopped between two of its transactions --------------------------------------------

_ORDER = (None, "in_flight", "committed", "completed")


def _kill_sqlite(api: Api, db_url: str, key: str, send: Callable[[], Raise],
                 after_commit: bool) -> None:
    want = "committed" if after_commit else "in_flight"
    path = make_url(db_url).database
    lock = sqlite3.connect(path, timeout=0, isolation_level=None)

    def take() -> bool:
        try:
            lock.execute("BEGIN IMMEDIATE")
            return True
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc) or "busy" in str(exc), exc
            return False

    def held_by_the_server() -> bool:
        if take():
            lock.execute("ROLLBACK")
            time.sleep(0.0002)  # the server's busy handler gets its turn
            return False
        return True

    try:
        request = send()
        while True:
            _until("the server to let go of the write lock", take, api.proc, pause=0)
            found = lock.execute("SELECT state FROM idempotency_key WHERE key = ?",
                                 (key,)).fetchone()
            state = found[0] if found else None
            if state == want:
                break  # the server waits for the lock before its next transaction
            assert _ORDER.index(state) < _ORDER.index(want), \
                f"the server went past {want} before the test could stop it ({state})"
            lock.execute("ROLLBACK")
            _until("the server's next transaction", held_by_the_server, api.proc, pause=0)
        api.kill()
        lock.execute("ROLLBACK")
        request.lost()
    finally:
        lock.close()


# --- the tests ------------------------------------------------------------------------------------

@pytest.fixture()
def raiser(factory):
    f = factory.facility("KILL", settings={"caseload_cap": 5, "ack_minutes": {
        "imminent": 5, "high": 15, "moderate": 60, "low": 1440}})
    return {"person": factory.recipient(f),
            "officer": factory.headers(factory.user(Role.officer, [f]))}


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
def test_api_killed_mid_raise_then_the_retry_is_answered_at_once(
        db_url, settings, factory, raiser, is_pg, after_commit):
    key = str(uuid.uuid4())
    headers = raiser["officer"] | {"Idempotency-Key": key}
    body = {"participant_id": str(raiser["person"].id), "category": "suicide_risk",
            "description": "Threatened to hang himself tonight", "tier": "imminent"}
    engine = create_engine(settings.sync_database_url)
    first = Api(db_url, settings)
    try:
        send = lambda: Raise(first, headers, body)  # noqa: E731
        if is_pg:
            _kill_pg(first, engine, key, send, after_commit)
        else:
            _kill_sqlite(first, db_url, key, send, after_commit)
    finally:
        first.stop()
    claim = _claim(engine, key)
    assert claim is not None
    if after_commit:  # the escalation was saved, its answer was not
        assert claim.state == "committed" and claim.response_status is None
        assert claim.result_type == "escalation"
        assert factory.count(Escalation) == 1
    else:  # nothing of the raise was saved; the dead process's claim remains, in its lease
        assert claim.state == "in_flight"
        assert factory.count(Escalation) == 0

    restarted = Api(db_url, settings)
    try:
        started = time.monotonic()
        retry = httpx.post(f"{restarted.url}/v1/escalations", json=body, headers=headers,
                           timeout=DEADLINE)
        took = time.monotonic() - started
        assert retry.status_code == 201, retry.text
        assert took < 10  # not after the 60 s lease
        escalations = _all(engine, Escalation)
        assert len(escalations) == 1
        esc = escalations[0]
        assert retry.json()["id"] == str(esc.id)
        assert retry.headers["Location"] == f"/v1/escalations/{esc.id}"
        assert retry.headers["ETag"]
        assert ("Idempotent-Replayed" in retry.headers) is after_commit
        if after_commit:
            assert retry.headers["Idempotent-Replayed"] == "true"
            assert esc.id == uuid.UUID(claim.result_id or "")
        # As the raiser sees it: what an officer sees of an escalation, no clinical detail.
        seen = httpx.get(f"{restarted.url}/v1/escalations/{esc.id}", headers=raiser["officer"],
                         timeout=DEADLINE).json()
        assert _steady(retry.json()) == _steady(seen)
        assert retry.json()["description"] is None and retry.json()["tier"] == "imminent"
        # Once more: the stored answer.
        again = httpx.post(f"{restarted.url}/v1/escalations", json=body, headers=headers,
                           timeout=DEADLINE)
        assert again.status_code == 201 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json()["id"] == str(esc.id)
    finally:
        restarted.stop()
    try:
        assert len(factory.events("escalation.created")) == 1
        assert len(factory.audits("escalation.create")) == 1
        assert factory.count(Escalation) == 1
        with Session(engine) as s:
            checked, broken = verify_chain(s)
        assert checked == len(factory.audits()) and broken == []
        assert _claim(engine, key).state == "completed"  # type: ignore[union-attr]
    finally:
        engine.dispose()


def _steady(view: dict[str, Any]) -> dict[str, Any]:
    """A view without its clock (seconds_remaining moves between two reads)."""
    return {k: v for k, v in view.items() if k != "seconds_remaining"}


def _all(engine: Engine, model: Any) -> list[Any]:
    with Session(engine) as s:
        return list(s.scalars(select(model)))

