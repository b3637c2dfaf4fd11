"""A worker killed (SIGKILL, no chance to clean up) in the middle of a breach round and then
restarted loses nothing and repeats nothing: every escalation past its deadline is breached
once, moves up its facility's chain once per level, and has exactly one `escalation.breached`
event, one timeline entry and one audit row for that breach.

The real worker (`peerlink worker`, a subprocess) runs against the test database. It is
stopped inside its round deterministically, without touching its code:
- PostgreSQL: the test holds a lock on the timeline table (SHARE), so the round, having
  claimed its rows FOR UPDATE and worked out every breach, waits as it writes its timeline
  entries, before its commit; the test sees the wait in pg_stat_activity and kills the process
  there. (Not at the audit chain's lock: the final statement that takes it carries the COMMIT
  with it, so a round killed while waiting there still commits, whole.)
- SQLite: write transactions take the database's write lock at their start (BEGIN IMMEDIATE).
  The test freezes the worker (SIGSTOP) and probes the lock: held while the worker is frozen
  means frozen inside its transaction, and it is killed there; else it is let go on (SIGCONT)
  and probed again a few milliseconds later. The first transaction the worker opens is its
  first breach round.
Waiting for the subprocess is a bounded poll; the business clock is the database's deadlines.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from app.models import AuditEvent, Escalation, EscalationEvent, OutboxEvent
from app.services.audit import verify_chain

CHAIN = ["on_call_clinician", "duty_supervisor", "facility_commander"]
FRESH, CLIMBING = 210, 30  # never breached; breached once before (level 1 -> 2)
TIERS = ("imminent", "high", "moderate", "low")


def _seed(factory) -> dict:
    """FRESH + CLIMBING escalations past their deadline: more than one round takes (200)."""
    f = factory.facility("KILL", settings={"caseload_cap": 5, "escalation_chain": CHAIN,
                                           "ack_minutes": {"imminent": 5, "high": 15,
                                                           "moderate": 60, "low": 1440}})
    people = [factory.recipient(f) for _ in range(5)]
    # Someone on call at every level, so each breach stops at the level it reaches.
    for level in CHAIN:
        factory.shift(f, factory.user("clinician" if "clinician" in level else "officer", [f]),
                      level)
    now = datetime.now(UTC)
    rows = []
    for i in range(FRESH + CLIMBING):
        climbing = i >= FRESH
        rows.append(Escalation(
            participant_id=people[i % 5].id, facility_id=f.id, network="incarcerated",
            category="self_harm", description="seen", tier=TIERS[i % 4], status="open",
            ack_deadline=now - timedelta(minutes=30) + timedelta(seconds=i),
            breached=climbing, chain_level=1 if climbing else 0, raised_by="test",
            raised_at=now - timedelta(hours=2), screener=None))
    with Session(factory.engine, expire_on_commit=False) as s:
        s.add_all(rows)
        s.commit()
    return {e.id: (2 if e.chain_level else 1) for e in rows}


def _start(db_url: str) -> subprocess.Popen:
    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING",
           "PEERLINK_ESCALATION_SWEEP_SECONDS": "1"}
    return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _until(what: str, done: Callable[[], bool], proc: subprocess.Popen | None = None,
           timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"worker exited ({proc.returncode}) before {what}: "
                                 f"{proc.stderr.read().decode()[-2000:]}")  # type: ignore[union-attr]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


def _due(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(Escalation).where(
            Escalation.status.in_(("open", "reopened")),
            Escalation.ack_deadline <= datetime.now(UTC))).scalar_one()


def _stopped(pid: int) -> bool:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in ("T", "t")


def _kill_inside_round_pg(proc: subprocess.Popen, engine) -> None:
    waiting = text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                   "AND wait_event_type = 'Lock' AND wait_event = 'relation'")
    in_transaction = text("SELECT count(*) FROM pg_stat_activity WHERE datname = "
                          "current_database() AND pid <> pg_backend_pid() AND xact_start IS "
                          "NOT NULL")
    with engine.connect() as lock, \
            engine.connect().execution_options(isolation_level="AUTOCOMMIT") as probe:
        # Holding the timeline table: the round, its rows claimed and its breaches worked out,
        # waits for it as it writes its timeline entries, before its commit.
        lock.execute(text("LOCK TABLE escalation_event IN SHARE MODE"))
        _until("the round to wait before its commit",
               lambda: probe.execute(waiting).scalar_one() >= 1, proc)
        proc.kill()
        proc.wait(timeout=15)
        lock.rollback()
        # The server finds its client gone and rolls the round back.
        _until("the killed worker's transaction to end",
               lambda: probe.execute(in_transaction).scalar_one() == 0)


def _kill_inside_round_sqlite(db_url: str, proc: subprocess.Popen) -> None:
    path = make_url(db_url).database

    def write_lock_held() -> bool:
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc) or "busy" in str(exc), exc
            return True
        finally:
            probe.close()

    def frozen_inside_a_transaction() -> bool:
        os.kill(proc.pid, signal.SIGSTOP)
        deadline = time.monotonic() + 5
        while not _stopped(proc.pid):
            assert time.monotonic() < deadline, "SIGSTOP not delivered"
            time.sleep(0.0005)
        if write_lock_held():
            return True
        os.kill(proc.pid, signal.SIGCONT)
        return False

    _until("the worker frozen inside its first breach round", frozen_inside_a_transaction, proc)
    proc.kill()
    proc.wait(timeout=15)


def test_worker_killed_mid_round_and_restarted_loses_nothing(db_url, factory, is_pg):
    expected = _seed(factory)
    engine = create_engine(factory.settings.sync_database_url)
    try:
        assert _due(engine) == FRESH + CLIMBING
        worker = _start(db_url)
        try:
            if is_pg:
                _kill_inside_round_pg(worker, engine)
            else:
                _kill_inside_round_sqlite(db_url, worker)
        finally:
            if worker.poll() is None:
                worker.kill()
                worker.wait()
        assert worker.returncode == -signal.SIGKILL
        # Killed inside the round: nothing of it was committed, everything is still due.
        assert _due(engine) == FRESH + CLIMBING
        assert factory.events("escalation.breached") == []

        restarted = _start(db_url)
        try:
            _until("every breach handled", lambda: _due(engine) == 0, restarted)
            restarted.send_signal(signal.SIGTERM)
            assert restarted.wait(timeout=15) == 0
        finally:
            if restarted.poll() is None:
                restarted.kill()
                restarted.wait()

        with Session(engine) as s:
            escalations = {e.id: e for e in s.scalars(select(Escalation))}
            events = list(s.scalars(select(OutboxEvent).where(
                OutboxEvent.type == "escalation.breached")))
            timeline = list(s.scalars(select(EscalationEvent).where(
                EscalationEvent.kind == "breached")))
            audits = list(s.scalars(select(AuditEvent).where(
                AuditEvent.action == "escalation.breach")))
            checked, broken = verify_chain(s)
    finally:
        engine.dispose()

    assert set(escalations) == set(expected)
    now = datetime.now(UTC)
    for eid, level in expected.items():
        e = escalations[eid]
        assert (e.breached, e.chain_level, e.version) == (True, level, 2), eid
        assert e.ack_deadline > now  # the next level's clock, not due again
    # Exactly one of each per breach, naming the level reached and whom it notifies.
    assert Counter(ev.entity_id for ev in events) == Counter(set(expected))
    assert {ev.entity_id: (ev.data["level"], ev.data["notify"]) for ev in events} == {
        eid: (level, CHAIN[level - 1]) for eid, level in expected.items()}
    assert Counter(t.escalation_id for t in timeline) == Counter(set(expected))
    assert {t.escalation_id: t.detail["level"] for t in timeline} == expected
    assert Counter(a.entity_id for a in audits) == Counter(str(eid) for eid in expected)
    assert checked == len(factory.audits()) and broken == []
