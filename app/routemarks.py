"""What a route declares about itself for the middleware that runs before routing (body
limits, rate limits, Idempotency-Key) and for the error handlers.

A mark is a dependency without parameters that does nothing: `dependencies=[CrisisWorkflow]`
on a route or its router. FastAPI keeps it on the route (its Dependant), and it adds nothing to
the OpenAPI document. `marked()` turns the routes carrying a mark into (method, path regex)
matchers, once, when the app is built (app/main.py); middleware never lists paths itself.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends
from fastapi.routing import APIRoute


async def form_body() -> None:
    """Mark: the body is an HTML form (the OAuth2 token endpoints), not JSON."""


async def import_file() -> None:
    """Mark: the body is a file (CSV or JSON lines) under the import size cap."""


async def crisis_workflow() -> None:
    """Mark: the crisis workflow (raising, working and watching an escalation, recording a
    disclosure, which can open one). Its writes are never rate limited for a signed-in caller."""


async def no_idempotency_key() -> None:
    """Mark: Idempotency-Key is not honoured: a token request is not a create, and tokens are
    never stored."""


async def audits_own_denials() -> None:
    """Mark: the route audits its own refusals (the token endpoint, with the account
    concerned); the error handler does not audit them again."""


def rebuilt_by(entity_type: str, answer: Callable[..., Awaitable[Any]]) -> Any:
    """Mark: a create route whose answer can be rebuilt from the record it created, for a retry
    whose first attempt committed and died before its answer was stored (app/idempotency.py).
    `answer(session, principal, entity_id, response)` returns what the route would have
    returned for that record (`entity_id`: the `<entity_type>.create` audit entry's id, as
    text), shaped for the caller, and sets the route's headers (Location, ETag) on `response`;
    the route's response model and status code serialise it."""

    async def rebuilt() -> None:
        """Mark: the route's answer can be rebuilt from the record it created."""

    rebuilt.rebuilds = (entity_type, answer)  # type: ignore[attr-defined]
    return Depends(rebuilt)


def rebuilds_of(route: APIRoute) -> tuple[str, Callable[..., Awaitable[Any]]] | None:
    """The route's rebuilt_by mark: (entity type, answer), if it carries one."""
    for d in route.dependant.dependencies:
        found = getattr(d.call, "rebuilds", None)
        if found is not None:
            return found  # type: ignore[no-any-return]
    return None


FormBody = Depends(form_body)
ImportFile = Depends(import_file)
CrisisWorkflow = Depends(crisis_workflow)
NoIdempotencyKey = Depends(no_idempotency_key)
AuditsOwnDenials = Depends(audits_own_denials)

Mark = Callable[[], Any]


def api_routes(routes: Iterable[Any]) -> list[APIRoute]:
    """Every APIRoute, including those of included routers (FastAPI keeps them nested)."""
    found: list[APIRoute] = []
    for r in routes:
        if isinstance(r, APIRoute):
            found.append(r)
        elif hasattr(r, "original_router"):
            found += api_routes(r.original_router.routes)
    return found


def declares(route: APIRoute, mark: Mark) -> bool:
    """Whether the route (or its router) carries the mark."""
    return any(d.call is mark for d in route.dependant.dependencies)


@dataclass(frozen=True)
class RouteSet:
    """The routes that carry one mark: matched on a request's method and path before routing,
    and listed by (method, path template) for the OpenAPI document."""

    patterns: dict[str, tuple[re.Pattern[str], ...]]
    templates: frozenset[tuple[str, str]]

    def matches(self, method: str, path: str) -> bool:
        return any(p.match(path) for p in self.patterns.get(method, ()))


def marked(routes: Iterable[APIRoute], mark: Mark, *,
           methods: Collection[str] | None = None) -> RouteSet:
    """The routes carrying `mark`; with `methods`, only those methods of them (a router-wide
    mark whose effect is on its writes)."""
    return route_set(routes, lambda route: declares(route, mark), methods=methods)


def depends_on(route: APIRoute, calls: Collection[Callable[..., Any]]) -> bool:
    """Whether one of `calls` is anywhere in the route's dependency tree (an authenticator)."""
    stack = list(route.dependant.dependencies)
    while stack:
        dep = stack.pop()
        if dep.call in calls:
            return True
        stack.extend(dep.dependencies)
    return False


def route_set(routes: Iterable[APIRoute], keep: Callable[[APIRoute], bool], *,
              methods: Collection[str] | None = None) -> RouteSet:
    patterns: dict[str, list[re.Pattern[str]]] = {}
    templates: set[tuple[str, str]] = set()
    for route in routes:
        if not keep(route):
            continue
        for method in route.methods or ():
            if methods is None or method in methods:
                patterns.setdefault(method, []).append(route.path_regex)
                templates.add((method, route.path))
    return RouteSet({m: tuple(p) for m, p in patterns.items()}, frozenset(templates))
