"""Typed dependency aliases the routers use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from sqlalchemy.ext.asyncio import AsyncSession

from app.config import Settings
from app.db import get_session
from app.errors import DomainError
from app.security.principal import Principal, get_principal

SessionDep = Annotated[AsyncSession, Depends(get_session)]


def _settings(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


# The app's settings (the ones create_app was given), for a service that needs one.
SettingsDep = Annotated[Settings, Depends(_settings)]


def require(*scopes: str) -> Any:
    """A route's declared scopes: `principal: Principal = require("participants:read")`."""
    return Security(get_principal, scopes=list(scopes))


async def _required_key(
    _authenticated: Annotated[Principal, Depends(get_principal)],  # 401 comes before 400
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                  max_length=200)] = None,
) -> str:
    if not idempotency_key:
        raise DomainError("This operation requires an Idempotency-Key header.",
                          code="idempotency_key_missing")
    return idempotency_key


# The replay itself is done for every POST by app.idempotency (middleware), and
# main.build_openapi documents the header on each; this makes it required (400 without it).
IdempotencyKeyRequired = Annotated[str, Depends(_required_key)]


def requires_idempotency_key(dependant: Any) -> bool:
    """Whether a route (its FastAPI Dependant) declares IdempotencyKeyRequired."""
    return any(d.call is _required_key or requires_idempotency_key(d)
               for d in dependant.dependencies)


__all__ = ["IdempotencyKeyRequired", "SessionDep", "SettingsDep", "Principal", "require",
           "requires_idempotency_key"]
