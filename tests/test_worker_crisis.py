"""Crisis work first in the worker: the escalation clock's sweeps (breach, watch, re-page) run
as crisis work on a pool of their own, so routine jobs holding every connection of the
worker's pool, or routine writers queued at the audit chain's gate, never delay a sweep's
round. Seen as a coordinator would: an escalation past its deadline is breached."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, text, update
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.orm import Session

from app.db import _sqlite_begin, _sqlite_pragmas, make_async_engine, make_sessionmaker
from app.models import Escalation
from app.services.audit import _GATE_KEY
from app.worker import _jobs, run_forever, run_job

SWEEPS = {"escalation_breach_sweep", "escalation_watch_sweep", "escalation_repage_sweep"}


def _overdue(factory):  # type: ignore[no-untyped-def]
    person = factory.participant(factory.facility())
    esc = factory.escalation(person, tier="imminent")
    with Session(factory.engine) as s:
        s.execute(update(Escalation).where(Escalation.id == esc.id)
                  .values(ack_deadline=datetime.now(UTC) - timedelta(minutes=1)))
        s.commit()
    return esc.id


def _breached(factory, esc_id) -> bool:  # type: ignore[no-untyped-def]
    with Session(factory.engine) as s:
        return bool(s.get(Escalation, esc_id).breached)  # type: ignore[union-attr]


def _wait_breached(factory, esc_id, timeout: float = 30) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not _breached(factory, esc_id) and time.monotonic() < deadline:
        time.sleep(0.1)
    return _breached(factory, esc_id)


def test_the_clocks_sweeps_are_the_crisis_jobs():
    assert {j.name for j in _jobs() if j.crisis} == SWEEPS
    routine = {j.name for j in _jobs() if not j.crisis}
    assert {"webhook_delivery", "import_resume", "certification_sweep"} <= routine


def test_a_sweep_breaches_while_routine_jobs_hold_every_connection_of_the_pool(
        settings, factory):
    """The worker's pool has one connection, and a routine job holds it (an import's long
    run): the breach sweep still takes its round, on the crisis pool."""
    esc_id = _overdue(factory)
    settings = settings.model_copy(update={"escalation_sweep_seconds": 0.5})

    async def go() -> bool:
        # The worker's pool, of one connection (on SQLite too, with the app's pragmas).
        engine = create_async_engine(settings.async_database_url, pool_size=1, max_overflow=0,
                                     pool_timeout=60)
        if settings.is_sqlite:
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _sqlite_begin)
        held = await engine.connect()  # the routine job's
        stop = asyncio.Event()
        worker = asyncio.create_task(run_forever(make_sessionmaker(engine), settings, stop))
        try:
            return await asyncio.to_thread(_wait_breached, factory, esc_id)
        finally:
            await held.close()  # the routine jobs get their connection, finish, and stop
            stop.set()
            await asyncio.wait_for(worker, 60)
            await engine.dispose()

    assert asyncio.run(go()) is True


def test_a_sweeps_commit_passes_routine_writers_queued_at_the_chains_gate(
        settings, factory, is_pg):
    """A routine writer holds the gate every routine commit queues at: the breach sweep
    (crisis work) commits past it. The same round run as routine work waits for the gate."""
    if not is_pg:
        pytest.skip("the gate is PostgreSQL's (SQLite has one writer at a time)")
    breach = next(j for j in _jobs() if j.name == "escalation_breach_sweep")
    first = _overdue(factory)
    gate_holder = create_engine(settings.sync_database_url)
    conn = gate_holder.connect()
    conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _GATE_KEY})

    async def go() -> tuple[bool, bool, bool]:
        engine = make_async_engine(settings)
        maker = make_sessionmaker(engine)
        try:
            assert await asyncio.wait_for(run_job(maker, settings, breach), 30) is not None
            crisis_breached = await asyncio.to_thread(_breached, factory, first)
            second = await asyncio.to_thread(_overdue, factory)
            routine = asyncio.create_task(
                run_job(maker, settings, dataclasses.replace(breach, crisis=False)))
            await asyncio.sleep(1.0)
            waited = not routine.done()  # queued at the gate
            await asyncio.to_thread(conn.execute, text("SELECT pg_advisory_unlock(:k)"),
                                    {"k": _GATE_KEY})
            await asyncio.wait_for(routine, 30)
            return crisis_breached, waited, await asyncio.to_thread(_breached, factory, second)
        finally:
            await engine.dispose()

    try:
        assert asyncio.run(go()) == (True, True, True)
    finally:
        conn.close()
        gate_holder.dispose()
