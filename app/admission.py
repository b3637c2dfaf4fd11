"""AdmissionMiddleware: crisis first in each API process. Routine requests run at most
`limit` at a time and the others wait their turn in arrival order; the routes marked
CrisisWorkflow (app/routemarks.py: raising, working and watching an escalation, recording a
disclosure), health, metrics and CORS preflights go straight through.

Why admission and not only a bigger pool: a raise shares the event loop, the CPU and the
audit chain's lock with whatever else the process runs. With 32 routine requests in flight a
raise waited for each of them at every await (1.2 s at p50 on two cores). With `limit` in
flight it waits for that many, whatever the queue behind them holds; and, as routine work never
has more than `limit` requests on the database, the write pool always has connections left for
crisis work (Settings checks `admission_routine_limit < db_pool_size`).

While crisis work is in flight the routine limit drops to `during_crisis` (1): the routine
requests already running finish, no new ones start beside the raise, and routine work still
moves (a board polling crisis routes all day never starves it).

A routine request waits in the queue at most `queue_seconds`: then it is answered 503
problem+json `overloaded` with `Retry-After`, having done nothing (a client retries later
rather than holding a connection while the queue does not move). Crisis routes never queue.

A slot is given back when the response starts (a long-lived response such as a stream holds
none) or when the request ends without one. Crisis requests run with `db.crisis_work` set, so
their commit goes to the audit chain's lock ahead of routine writers (services/audit.py).
"""

from __future__ import annotations

import asyncio
import math
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import crisis_work
from app.errors import problem_response
from app.ratelimit import EXEMPT_PATHS
from app.routemarks import RouteSet


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int, crisis: RouteSet,
                 during_crisis: int = 1, queue_seconds: float = 10.0) -> None:
        self.app = app
        self.limit = limit
        self.queue_seconds = queue_seconds
        self.during_crisis = min(during_crisis, limit)
        self.crisis = crisis
        self.running = 0  # routine requests admitted and not yet answered
        self.crises = 0  # crisis requests in flight
        self.waiting: deque[asyncio.Future[None]] = deque()

    @property
    def _room(self) -> int:
        return (self.during_crisis if self.crises else self.limit) - self.running

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" \
                or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.crisis.matches(scope["method"], scope["path"]):
            await self._crisis(scope, receive, send)
            return
        if not await self._admit():
            await self._overloaded(scope, receive, send)
            return
        done = False

        def leave() -> None:
            nonlocal done
            if not done:
                done = True
                self._leave()

        async def send_then_leave(message: Message) -> None:
            if message["type"] == "http.response.start":
                leave()
            await send(message)

        try:
            await self.app(scope, receive, send_then_leave)
        finally:
            leave()

    async def _crisis(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = crisis_work.set(True)
        self.crises += 1
        over = False

        def answered() -> None:
            nonlocal over
            if not over:
                over = True
                self.crises -= 1
                self._hand_on()

        async def send_then_answered(message: Message) -> None:
            if message["type"] == "http.response.start":
                answered()
            await send(message)

        try:
            await self.app(scope, receive, send_then_answered)
        finally:
            answered()
            crisis_work.reset(token)

    async def _admit(self) -> bool:
        """True once admitted; False when the request waited `queue_seconds` in vain."""
        if self._room > 0 and not self.waiting:
            self.running += 1
            return True
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            await asyncio.wait((turn,), timeout=self.queue_seconds)
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._leave()  # the slot came as the client went away: pass it on
            elif turn in self.waiting:
                self.waiting.remove(turn)
            raise
        if turn.done():
            return True  # _hand_on admitted it: `running` already counts this request
        self.waiting.remove(turn)
        turn.cancel()
        return False

    async def _overloaded(self, scope: Scope, receive: Receive, send: Send) -> None:
        retry = max(1, math.ceil(self.queue_seconds))
        response = problem_response(
            503, "overloaded", "Service overloaded",
            f"Routine requests waited {self.queue_seconds:g} s for their turn and this one did "
            "not get it; nothing was done. Retry after the Retry-After seconds. (Crisis work, "
            "such as raising an escalation, never waits.)",
            headers={"Retry-After": str(retry)})
        await response(scope, receive, send)

    def _leave(self) -> None:
        self.running -= 1
        self._hand_on()

    def _hand_on(self) -> None:
        """Admits waiters, first come first served, while there is room."""
        while self.waiting and self._room > 0:
            turn = self.waiting.popleft()
            if not turn.done():
                self.running += 1
                turn.set_result(None)
