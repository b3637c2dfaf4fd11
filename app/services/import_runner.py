"""ImportRunner: runs large import jobs in the API process, as tasks the lifespan owns.

The imports route starts a job here at once, with the file it already parsed. On shutdown (or
a crash) a running job stops between statements (its chunk rolls back); its lease then runs
out and the worker's `import_resume` (imports.resume_stalled) continues after the last
committed chunk.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.config import Settings
from app.services.imports import Parsed, claim, run_claimed

log = logging.getLogger("peerlink.imports")


class ImportRunner:
    def __init__(self, maker: async_sessionmaker[AsyncSession], settings: Settings) -> None:
        self._maker = maker
        self._settings = settings
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

    def start(self, job_id: uuid.UUID, parsed: Parsed | None = None) -> None:
        """Runs the job in this process now, outside the request that submitted it."""
        task = asyncio.create_task(self._run(job_id, parsed))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, job_id: uuid.UUID, parsed: Parsed | None) -> None:
        try:
            async with self._maker() as session:
                job = await claim(session, self._settings, job_id)
                if job is not None:
                    await run_claimed(session, self._settings, job, parsed)
        except Exception:
            log.exception("import job failed; it resumes when its lease runs out",
                          extra={"import_id": str(job_id)})

    async def shutdown(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
