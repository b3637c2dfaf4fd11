"""A shutdown never hangs on a background task (app/tasks.py).

A CI run on PostgreSQL hung in a TestClient's lifespan shutdown: the LISTEN connection's
heartbeat used `asyncio.wait_for`, which on Python 3.11 swallows a cancellation that arrives just
as the awaited round trip completes, so the cancelled listener ran on and the shutdown awaited it
forever."""

from __future__ import annotations

import ast
import asyncio
from pathlib import Path

import app
from app import tasks

APP = Path(app.__file__).parent


def test_the_app_never_uses_wait_for() -> None:
    """asyncio.wait_for loses cancellations on 3.11; app/tasks.py says what to use instead."""
    found = []
    for path in APP.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Attribute) and node.attr == "wait_for" \
                    and isinstance(node.value, ast.Name) and node.value.id == "asyncio":
                found.append(f"{path.relative_to(APP.parent)}:{node.lineno}")
    assert found == []


async def _heartbeat_loop(beats: list[asyncio.Future[None]], swallow: bool) -> None:
    """A loop like the LISTEN connection's: one round trip per beat, with a timeout."""
    while True:
        beat: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        beats.append(beat)
        if swallow:  # what 3.11's asyncio.wait_for does when the operation has just completed
            try:
                await beat
            except asyncio.CancelledError:
                if beat.cancelled():  # the operation itself was cancelled
                    raise
        else:
            async with asyncio.timeout(1):
                await beat
        await asyncio.sleep(0.01)


async def _cancel_as_the_beat_completes(swallow: bool) -> tuple[bool, float]:
    beats: list[asyncio.Future[None]] = []
    task = asyncio.create_task(_heartbeat_loop(beats, swallow))
    await asyncio.sleep(0)
    beats[-1].set_result(None)  # the round trip completes ...
    loop = asyncio.get_running_loop()
    started = loop.time()
    stopped = await tasks.stop(task, seconds=3, every=0.05)  # ... and the cancellation arrives
    return stopped, loop.time() - started


def test_stop_ends_a_task_that_swallowed_the_first_cancellation() -> None:
    stopped, took = asyncio.run(_cancel_as_the_beat_completes(swallow=True))
    assert stopped and took < 1


def test_a_loop_on_asyncio_timeout_ends_at_the_first_cancellation() -> None:
    stopped, took = asyncio.run(_cancel_as_the_beat_completes(swallow=False))
    assert stopped and took < 0.05


def test_stop_gives_up_on_a_task_that_never_ends() -> None:
    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                continue

    async def main() -> tuple[bool, float, asyncio.Task[None]]:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        loop = asyncio.get_running_loop()
        started = loop.time()
        stopped = await tasks.stop(task, seconds=0.3, every=0.05)
        took = loop.time() - started
        return stopped, took, task

    stopped, took, _ = _run_stubborn(main)
    assert not stopped and 0.3 <= took < 1.5


def _run_stubborn(main):  # type: ignore[no-untyped-def]
    # asyncio.run cancels what is left at exit and would wait on the stubborn task forever: run
    # the loop by hand and close it without that.
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(main())
    finally:
        loop.close()


def test_wait_says_whether_it_finished() -> None:
    async def main() -> tuple[bool, bool]:
        done = asyncio.Event()
        done.set()
        return await tasks.wait(done.wait(), 1), await tasks.wait(asyncio.Event().wait(), 0.05)

    assert asyncio.run(main()) == (True, False)
