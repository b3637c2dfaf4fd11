"""ImportRunner: runs large import jobs in the API process, on a thread of their own.

The imports route starts a job here at once, with the file it already holds. The jobs run on
one thread with its own event loop and its own small connection pool: on the request loop a
job's every database round trip waited its turn behind every request in flight, so other
traffic stretched a 1,000-row chunk from a fraction of a second to several seconds (issue 13,
item 12); here it shares only the CPU. On shutdown (or a crash) a running job stops between
statements (its chunk rolls back); its lease then runs out and the worker's `import_resume`
(imports.resume_stalled) continues after the last committed chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import threading
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app import tasks
from app.config import Settings
from app.db import make_async_engine, make_sessionmaker
from app.services.imports import claim, run_claimed

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

    def start(self, job_id: uuid.UUID, content: bytes | None = None) -> None:
        """Runs the job in this process now, outside the request that submitted it (with the
        request's context: its request id goes on the job's audit rows)."""
        loop = self._loop_ready()
        context = contextvars.copy_context()

        def spawn() -> None:
            task = loop.create_task(self._run(job_id, content), context=context)
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        loop.call_soon_threadsafe(spawn)

    async def _run(self, job_id: uuid.UUID, content: bytes | None) -> None:
        assert self._maker is not None
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
