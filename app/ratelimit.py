"""RateLimitMiddleware: a budget per caller (the token's subject) or, without a valid token,
per client address; 429 problem+json with `Retry-After`, and the IETF ratelimit-headers
(`RateLimit-Policy`, `RateLimit`) on every counted response.

Never counted: the crisis workflow's writes by a signed-in caller (the routes marked
CrisisWorkflow, app/routemarks.py: raising, working and watching an escalation, recording a
disclosure), health and metrics, CORS preflights. Sign-in failures have their own, stricter throttle
(services/auth.Throttle); both use the `limits` storage from settings (app.counters: per
process, or Redis shared by every process of a deployment).
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.strategies import SlidingWindowCounterRateLimiter
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.counters import counter_storage
from app.errors import problem_response
from app.routemarks import RouteSet
from app.security.principal import bearer_principal

EXEMPT_PATHS = frozenset({"/livez", "/readyz", "/metrics"})
CRISIS_METHODS = frozenset({"POST"})  # the crisis workflow's writes


class RateLimitMiddleware:
    def __init__(self, app: ASGIApp, settings: Settings, *, crisis_actions: RouteSet) -> None:
        self.app = app
        self.crisis_actions = crisis_actions
        self.limiter = SlidingWindowCounterRateLimiter(counter_storage(settings))
        self.caller: RateLimitItem = parse(settings.rate_limit_per_caller)
        self.anonymous: RateLimitItem = parse(settings.rate_limit_anonymous)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" \
                or scope["path"] in EXEMPT_PATHS:
            await self.app(scope, receive, send)
            return
        principal = await bearer_principal(scope)
        subject = principal.actor if principal else None
        if subject is not None and self.crisis_actions.matches(scope["method"], scope["path"]):
            await self.app(scope, receive, send)
            return
        if subject is not None:
            item, name, key = self.caller, "caller", f"s:{subject}"
        else:
            client = scope.get("client")
            item, name, key = self.anonymous, "anonymous", f"a:{client[0] if client else '-'}"
        allowed = await self.limiter.hit(item, "api", key)
        stats = await self.limiter.get_window_stats(item, "api", key)
        reset = max(1, math.ceil(stats.reset_time - time.time()))
        headers = [(b"ratelimit-policy", f'"{name}";q={item.amount};w={item.get_expiry()}'.encode()),
                   (b"ratelimit", f'"{name}";r={stats.remaining};t={reset}'.encode())]
        if not allowed:
            response = problem_response(
                429, "rate_limited", "Too many requests",
                "This caller has used its request budget; retry after the Retry-After seconds.",
                headers={"Retry-After": str(reset)})
            response.raw_headers.extend(headers)
            await response(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = dict(message)
                message["headers"] = [*message.get("headers", []), *headers]
            await send(message)

        await self.app(scope, receive, with_headers)
