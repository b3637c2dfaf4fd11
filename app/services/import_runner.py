"""ImportRunner: runs large import jobs on a thread of their own, in a `peerlink worker`
process or, when none takes the job in time, in the API process that received it.

The jobs run on one thread with its own event loop and its own small connection pool: on the
request loop a job's every database round trip waited its turn behind every request in
flight, so other traffic stretched a 1,000-row chunk from a fraction of a second to several
seconds (issue 13, item 12). A thread still shares the process's interpreter lock: each time
the job's loop wakes (a database reply) it can wait up to the switch interval (5 ms) behind
the request loop, hundreds of times a file, and the requests wait behind the job's CPU in the
same way. So on PostgreSQL a job goes to the worker processes first: `submit` sends its id on
`imports.CHANNEL` with its commit, a worker listening there (app.worker.taking_imports) claims
it at once, and the API process's runner claims it only after
`import_worker_handoff_seconds` (a deployment without a worker, or with every worker down,
still gets its import; `claim` lets only one of them have it). On SQLite, or with the worker
embedded, the API process is the worker and runs the job at once.

On shutdown (or a crash) a running job stops between statements (its chunk rolls back); its
lease then runs out and a runner or the worker's `import_resume` (imports.resume_stalled)
continues after the last committed chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import tasks
from app.config import Settings
from app.db import make_async_engine, make_sessionmaker
from app.services.imports import claim, run_claimed, waiting

log = logging.getLogger("peerlink.imports")

# Connections of the runner's own pool: one per job running at once, and a spare.
POOL = 2


class ImportRunner:
    def __init__(self, maker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._settings = settings
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._engine: AsyncEngine | None = None
        self._maker: async_sessionmaker[AsyncSession] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @classmethod
    @asynccontextmanager
    async def running(cls, maker: async_sessionmaker[AsyncSession],
                      settings: Settings) -> AsyncIterator[ImportRunner]:
        """A runner for the app's lifetime; its jobs stop when the app does."""
        runner = cls(maker, settings)
        try:
            yield runner
        finally:
            await runner.shutdown()

    def _loop_ready(self) -> asyncio.AbstractEventLoop:
        """The runner's loop, started with the first job (most processes never run one)."""
        with self._lock:
            if self._loop is None:
                ready = threading.Event()
                self._thread = threading.Thread(target=self._serve, args=(ready,),
                                                name="peerlink-imports", daemon=True)
                self._thread.start()
                ready.wait()
            assert self._loop is not None
            return self._loop

    def _serve(self, ready: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._engine = make_async_engine(self._settings.model_copy(
            update={"db_pool_size": POOL}))
        self._maker = make_sessionmaker(self._engine)
        self._loop = loop
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    @property
    def handoff_seconds(self) -> float:
        """How long a job sent to this process waits for a worker process to take it."""
        s = self._settings
        return 0.0 if s.is_sqlite or s.run_embedded_worker else s.import_worker_handoff_seconds

    def offer(self, job_id: uuid.UUID, content: bytes) -> None:
        """A job just sent to this API process: a worker process takes it if one is there,
        else this process runs it after `handoff_seconds`, with the file it already holds."""
        self.start(job_id, content, after=self.handoff_seconds)

    def start(self, job_id: uuid.UUID, content: bytes | None = None, after: float = 0.0) -> None:
        """Runs the job in this process (after `after` seconds, if nobody has taken it by
        then), outside the caller's task but with its context (a request's id)."""
        self._spawn(self._run(job_id, content, after))

    def catch_up(self) -> None:
        """Runs the open jobs nobody holds (sent while no worker listened, or whose runner
        stopped): what a worker does each time it starts listening."""
        self._spawn(self._catch_up())

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        loop = self._loop_ready()
        context = contextvars.copy_context()

        def spawn() -> None:
            task = loop.create_task(work, context=context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(spawn)

    async def _catch_up(self) -> None:
        assert self._maker is not None
        try:
            async with self._maker() as session:
                ids = await waiting(session)
        except Exception:
            log.exception("could not look for waiting import jobs; import_resume will")
            return
        for job_id in ids:
            self._spawn(self._run(job_id, None, 0.0))

    async def _run(self, job_id: uuid.UUID, content: bytes | None, after: float) -> None:
        assert self._maker is not None
        if after > 0:
            await asyncio.sleep(after)
        try:
            async with self._maker() as session:
                job = await claim(session, self._settings, job_id)
                if job is not None:
                    await run_claimed(session, self._settings, job, content)
        except Exception:
            log.exception("import job failed; it resumes when its lease runs out",
                          extra={"import_id": str(job_id)})

    async def _stop_jobs(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._engine is not None:
            await self._engine.dispose()

    async def shutdown(self) -> None:
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive() and loop.is_running():
            # Bounded: a runner loop that stops while this waits must not hold the shutdown.
            stopping = asyncio.wrap_future(
                asyncio.run_coroutine_threadsafe(self._stop_jobs(), loop))
            await tasks.wait(stopping, 30)
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, 30)
        self._loop = self._thread = None
