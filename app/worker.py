"""Background jobs: periodic work that must run whether or not anyone calls the API.

`peerlink worker` runs them as their own process (production, PostgreSQL: several workers may
run; each round of a job is taken by one of them under a transaction-scoped advisory lock).
For the embedded SQLite default the service runs them itself (`PEERLINK_EMBEDDED_WORKER`).
State lives in the database, so a restart loses nothing.

Crisis first: the escalation clock's sweeps (breach, watch, re-page; `Job.crisis`) run as
crisis work (`db.crisis_work`: their commits go straight to the audit chain's lock, past the
gate routine writers queue at) on a connection pool of their own, so a routine job (an import's
chunks, the webhook routine lane, the certification sweep) holding every connection of the
worker's pool, or queued on the gate, never delays a sweep's round. Every job is its own task,
so a slow round of one never holds up the next round of another.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import Counter, Gauge
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app import tasks
from app.config import Settings
from app.db import crisis_work, make_crisis_engine, make_sessionmaker

log = logging.getLogger("peerlink.worker")

# This process's own view (served by `peerlink worker --metrics-port`); the database-wide
# figures (every worker's last success, the backlogs) are the API's /metrics.
ROUNDS = Counter("peerlink_worker_rounds_total", "Rounds of a background job run here",
                 ["job", "outcome"])
LAST_SUCCESS = Gauge("peerlink_worker_job_last_success_timestamp_seconds",
                     "When this process last finished a round of the job", ["job"])

# A job polling faster than this (webhook delivery) stamps `worker_job` at most this often,
# adding up the rounds in between: liveness needs seconds, not a write per poll.
RECORD_EVERY_SECONDS = 1.0
_unrecorded: dict[str, tuple[int, float]] = {}  # job -> (rounds not yet stamped, last stamp)


@dataclass(frozen=True)
class Job:
    name: str
    run: Callable[[AsyncSession, Settings], Awaitable[dict[str, int]]]
    every_seconds: Callable[[Settings], float]
    # One round at a time across workers (advisory lock); False: the job claims its own rows
    # (SKIP LOCKED) so several workers share its work.
    exclusive: bool = True
    # The crisis clock's: runs as crisis work on the crisis pool (see the module's docstring).
    crisis: bool = False


def _jobs() -> list[Job]:
    from app.services.escalations import breach_sweep, watch_sweep
    from app.services.escalations.paging import repage_sweep
    from app.services.idempotency import purge
    from app.services.imports import resume_stalled
    from app.services.pairings import certification_sweep
    from app.services.webhook_delivery import delivery_job, purge_log

    return [Job("escalation_breach_sweep", breach_sweep, lambda s: s.escalation_sweep_seconds,
                crisis=True),
            Job("escalation_watch_sweep", watch_sweep, lambda s: s.escalation_sweep_seconds,
                crisis=True),
            Job("escalation_repage_sweep", repage_sweep, lambda s: s.escalation_sweep_seconds,
                crisis=True),
            Job("certification_sweep", certification_sweep,
                lambda s: s.certification_sweep_minutes * 60),
            Job("idempotency_purge", purge, lambda s: 600),
            Job("webhook_delivery", delivery_job, lambda s: s.webhook_poll_seconds,
                exclusive=False),
            Job("webhook_log_purge", purge_log, lambda s: 3600),
            Job("import_resume", resume_stalled, lambda s: s.import_lease_seconds / 4)]


async def run_job(maker: async_sessionmaker[AsyncSession], settings: Settings,
                  job: Job) -> dict[str, int] | None:
    """One round of `job`; None when another worker holds this round. A crisis job's round
    runs as crisis work."""
    token = crisis_work.set(job.crisis)
    try:
        return await _run_job(maker, settings, job)
    finally:
        crisis_work.reset(token)


async def _run_job(maker: async_sessionmaker[AsyncSession], settings: Settings,
                   job: Job) -> dict[str, int] | None:
    async with maker() as session:
        if job.exclusive and session.bind.dialect.name == "postgresql":  # type: ignore[union-attr]
            key = zlib.crc32(job.name.encode())
            got = (await session.execute(text("SELECT pg_try_advisory_xact_lock(:k)"),
                                         {"k": key})).scalar()
            if not got:
                return None
        result = await job.run(session, settings)
        await _record(session, settings, job)
        return result


async def _record(session: AsyncSession, settings: Settings, job: Job) -> None:
    """Stamps the successful round in `worker_job` (one statement, its own commit)."""
    from app.services.liveness import record_success

    pending, stamped = _unrecorded.get(job.name, (0, 0.0))
    pending += 1
    now = time.monotonic()
    if job.every_seconds(settings) < RECORD_EVERY_SECONDS and now - stamped < RECORD_EVERY_SECONDS:
        _unrecorded[job.name] = (pending, stamped)
    else:
        await record_success(session, job.name, pending)
        _unrecorded[job.name] = (0, now)
    ROUNDS.labels(job.name, "ok").inc()
    LAST_SUCCESS.labels(job.name).set(time.time())


async def _record_failure(maker: async_sessionmaker[AsyncSession], job: Job) -> None:
    from app.services.liveness import record_failure

    ROUNDS.labels(job.name, "error").inc()
    try:
        async with maker() as session:
            await record_failure(session, job.name)
    except Exception:  # the database may be what failed; the log has the round's error
        log.debug("could not stamp the failure", exc_info=True)


async def run_forever(maker: async_sessionmaker[AsyncSession], settings: Settings,
                      stop: asyncio.Event | None = None) -> None:
    """Each job on its own schedule, side by side: a slow round of one (a webhook receiver
    taking its time) never delays another (the crisis clock's breach sweep). The crisis jobs
    take their connections from a pool of their own."""
    from app.services.leaseholder import HOLDER

    stop = stop or asyncio.Event()
    holder: asyncio.Task[None] | None = None
    if not settings.is_sqlite:
        # The process's identity for its webhook leases, held before it claims any.
        ready = asyncio.Event()
        holder = asyncio.create_task(HOLDER.run(settings, ready))
        await tasks.wait(ready.wait(), 10)
    jobs = _jobs()
    engine = make_crisis_engine(maker.kw["bind"], sum(j.crisis for j in jobs))
    crisis_maker = make_sessionmaker(engine)
    try:
        await asyncio.gather(*(_every(crisis_maker if job.crisis else maker, settings, job, stop)
                               for job in jobs))
    finally:
        if holder is not None:
            await tasks.stop(holder)
        if engine is not maker.kw["bind"]:
            await engine.dispose()


async def _every(maker: async_sessionmaker[AsyncSession], settings: Settings, job: Job,
                 stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        try:
            result = await run_job(maker, settings, job)
            if result and any(result.values()):  # quiet when a round found nothing
                log.info("job done", extra={"job": job.name, **result})
        except Exception:
            log.exception("job failed", extra={"job": job.name})
            await _record_failure(maker, job)
        wait = max(0.5, started + job.every_seconds(settings) - loop.time())
        await tasks.wait(stop.wait(), wait)


@contextlib.asynccontextmanager
async def taking_imports(maker: async_sessionmaker[AsyncSession], settings: Settings) -> Any:
    """`peerlink worker` on PostgreSQL: takes each large import as it is sent (its id on
    `imports.CHANNEL`, on the LISTEN connection app.security.invalidation keeps up) and runs it
    on an ImportRunner's thread, in this process rather than the API process that received it
    (app/services/import_runner.py says why). On each (re)connection it first runs what was
    sent while it was not listening. Several workers may listen: `claim` gives a job to one."""
    if settings.is_sqlite:
        yield
        return
    from app.security import invalidation
    from app.services.import_runner import ImportRunner
    from app.services.imports import CHANNEL

    async with ImportRunner.running(maker, settings) as runner:
        def notified(payload: str) -> None:
            try:
                job_id = uuid.UUID(payload)
            except ValueError:  # not one of ours; the listener must not fall over on it
                log.warning("ignored a malformed import notification", extra={"payload": payload[:64]})
                return
            runner.start(job_id)

        channel = invalidation.Channel(CHANNEL, notified=notified, listening=runner.catch_up)
        async with invalidation.running(settings, [channel]):
            yield


@contextlib.asynccontextmanager
async def embedded(maker: async_sessionmaker[AsyncSession], settings: Settings) -> Any:
    """Runs the worker inside the service for the app's lifetime, when configured to."""
    if not settings.run_embedded_worker:
        yield
        return
    stop = asyncio.Event()
    task = asyncio.create_task(run_forever(maker, settings, stop))
    try:
        yield
    finally:
        # Let each job finish its round (it stops waiting at once when `stop` is set); cancel
        # only a round that overstays. Cancelling rounds mid-statement could leave a database
        # call waiting on a connection that is already gone.
        stop.set()
        if not await tasks.wait(asyncio.shield(task), 10):
            await tasks.stop(task)
