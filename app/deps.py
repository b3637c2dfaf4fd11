"""Typed dependency aliases the routers use."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Security
from sqlalchemy.ext.asyncio import AsyncSession

from app.db import get_session
from app.security.principal import Principal, get_principal

SessionDep = Annotated[AsyncSession, Depends(get_session)]


def require(*scopes: str) -> Any:
    """A route's declared scopes: `principal: Principal = require("participants:read")`."""
    return Security(get_principal, scopes=list(scopes))


__all__ = ["SessionDep", "Principal", "require"]
