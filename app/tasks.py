"""Background tasks that the lifespan starts and stops (the LISTEN connection, the liveness and
lease locks, the stream's hub, the embedded worker), stopped so that a shutdown never hangs.

Python 3.11's `asyncio.wait_for` swallows a cancellation that arrives just as the awaited
operation completes (CPython gh-86296, fixed in 3.12): a loop built on it (a heartbeat every
half second) then runs on, and a shutdown that awaits the cancelled task waits forever. So the
app never uses `asyncio.wait_for` (tests/test_tasks.py holds that); it uses `asyncio.timeout`,
which counts cancellations, and `stop()` below, which cancels again until the task ends and
gives up, loudly, after a bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("peerlink.tasks")


async def stop(task: asyncio.Future[Any] | None, *, seconds: float = 10.0,
               every: float = 0.5) -> bool:
    """Cancel `task` and wait for it to end: cancelled again every `every` seconds (a
    cancellation that third-party code swallowed), for `seconds` at most. True once it ended;
    False (logged) when it outlived the bound, so the caller's shutdown goes on."""
    if task is None or task.done():
        return True
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not task.done():
        task.cancel()
        left = deadline - loop.time()
        if left <= 0:
            log.error("a background task did not stop when cancelled; shutdown goes on",
                      extra={"task": getattr(task, "get_name", lambda: repr(task))()})
            return False
        # asyncio.wait never raises on the awaited task's outcome and is not cancelled by it.
        await asyncio.wait([task], timeout=min(every, left))
    with contextlib.suppress(asyncio.CancelledError, Exception):
        task.result()  # retrieved: no "exception was never retrieved" at exit
    return True


async def wait(awaitable: Any, seconds: float) -> bool:
    """Await `awaitable` for `seconds` at most: True when it finished, False on the timeout.
    The replacement for `contextlib.suppress(TimeoutError): await asyncio.wait_for(...)`."""
    try:
        async with asyncio.timeout(seconds):
            await awaitable
    except TimeoutError:
        return False
    return True
