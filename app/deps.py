"""Typed dependency aliases the routers use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Security
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import get_session
from app.errors import DomainError
from app.security.principal import Principal, get_principal

SessionDep = Annotated[AsyncSession, Depends(get_session)]


def require(*scopes: str) -> Any:
    """A route's declared scopes: `principal: Principal = require("participants:read")`."""
    return Security(get_principal, scopes=list(scopes))


_KEY_DOC = ("A unique key per logical operation (a UUID is a good choice). A retry with the same "
            "key and body returns the stored response; the same key with another body is a 422; "
            "while the first request is in flight, 409. Keys are kept 24 hours per caller.")


async def _optional_key(
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                  max_length=200, description=_KEY_DOC)] = None,
) -> str | None:
    return idempotency_key


async def _required_key(
    _authenticated: Annotated[Principal, Depends(get_principal)],  # 401 comes before 400
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key", min_length=1,
                                                  max_length=200,
                                                  description="Required. " + _KEY_DOC)] = None,
) -> str:
    if not idempotency_key:
        raise DomainError("This operation requires an Idempotency-Key header.",
                          code="idempotency_key_missing")
    return idempotency_key


# The replay itself is done for every POST by app.idempotency (middleware); these declare the
# header in the contract, and the second refuses a request without one (400).
IdempotencyKey = Annotated[str | None, Depends(_optional_key)]
IdempotencyKeyRequired = Annotated[str, Depends(_required_key)]


def requires_idempotency_key(dependant: Any) -> bool:
    """Whether a route (its FastAPI Dependant) declares IdempotencyKeyRequired."""
    return any(d.call is _required_key or requires_idempotency_key(d)
               for d in dependant.dependencies)


__all__ = ["IdempotencyKey", "IdempotencyKeyRequired", "SessionDep", "Principal", "require",
           "requires_idempotency_key"]
