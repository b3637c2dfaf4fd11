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

A slot is given back when the response starts (a long-lived response such as a stream holds
none) or when the request ends without one. Crisis requests run with `db.crisis_work` set, so
their commit goes to the audit chain's lock ahead of routine writers (services/audit.py).
"""

from __future__ import annotations

import asyncio
from collections import deque

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.db import crisis_work
from app.ratelimit import EXEMPT_PATHS
from app.routemarks import RouteSet


class AdmissionMiddleware:
    def __init__(self, app: ASGIApp, *, limit: int, crisis: RouteSet) -> None:
        self.app = app
        self.limit = limit
        self.crisis = crisis
        self.running = 0  # routine requests admitted and not yet answered
        self.waiting: deque[asyncio.Future[None]] = deque()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" \
                or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        if self.crisis.matches(scope["method"], scope["path"]):
            token = crisis_work.set(True)
            try:
                await self.app(scope, receive, send)
            finally:
                crisis_work.reset(token)
            return
        await self._admit()
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

    async def _admit(self) -> None:
        if self.running < self.limit and not self.waiting:
            self.running += 1
            return
        turn = asyncio.get_running_loop().create_future()
        self.waiting.append(turn)
        try:
            await turn  # _leave hands its slot over: `running` already counts this request
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._leave()  # the slot came as the client went away: pass it on
            elif turn in self.waiting:
                self.waiting.remove(turn)
            raise

    def _leave(self) -> None:
        while self.waiting:
            turn = self.waiting.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self.running -= 1
