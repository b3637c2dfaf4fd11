"""Typed dependency aliases the routers use: the request's session and principal, and what
the app factory built once (settings, keys, the note cipher, the session maker...). Routers
take these; they never read `request.app.state` (tests/test_edge.py checks)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Header, Request, Security
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.config import Settings
from app.db import get_session
from app.errors import DomainError
from app.idempotency import request_claim
from app.security.notes import NoteCipher
from app.security.principal import Principal, get_principal
from app.security.tokens import KeyRing
from app.services import idempotency
from app.services.auth import Throttle
from app.services.import_runner import ImportRunner


async def get_request_session(request: Request) -> AsyncSession:
    """The request's session (app.db.SessionMiddleware opens it on first use), carrying the
    request's Idempotency-Key claim when the middleware took one: Writer.commit marks the claim
    committed in the same transaction as the change."""
    session = await get_session(request)
    claim = request_claim(request.scope)
    if claim is not None:
        idempotency.bind(session, claim)
    return session


SessionDep = Annotated[AsyncSession, Depends(get_request_session)]


# What create_app() built lives on app.state; these are the only readers for the routers.
# Async, so FastAPI calls them inline (a plain def would go to the thread pool).
async def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings  # type: ignore[no-any-return]


async def get_note_cipher(request: Request) -> NoteCipher:
    return request.app.state.note_cipher  # type: ignore[no-any-return]


async def get_keyring(request: Request) -> KeyRing:
    return request.app.state.keyring  # type: ignore[no-any-return]


async def get_throttle(request: Request) -> Throttle:
    return request.app.state.throttle  # type: ignore[no-any-return]


async def get_session_maker(request: Request) -> async_sessionmaker[AsyncSession]:
    """The write sessionmaker: for a transaction of its own beside the request's."""
    return request.app.state.sessionmaker  # type: ignore[no-any-return]


async def get_engine(request: Request) -> AsyncEngine:
    return request.app.state.engine  # type: ignore[no-any-return]


async def get_import_runner(request: Request) -> ImportRunner:
    """Started and shut down by the lifespan (app/main.py)."""
    return request.app.state.import_runner  # type: ignore[no-any-return]


SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
NoteCipherDep = Annotated[NoteCipher, Depends(get_note_cipher)]
KeyRingDep = Annotated[KeyRing, Depends(get_keyring)]
ThrottleDep = Annotated[Throttle, Depends(get_throttle)]
SessionMakerDep = Annotated[async_sessionmaker[AsyncSession], Depends(get_session_maker)]
EngineDep = Annotated[AsyncEngine, Depends(get_engine)]
ImportRunnerDep = Annotated[ImportRunner, Depends(get_import_runner)]



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


__all__ = ["EngineDep", "IdempotencyKeyRequired", "ImportRunnerDep", "KeyRingDep", "NoteCipherDep",
           "Principal", "SessionDep", "SessionMakerDep", "SettingsDep", "ThrottleDep", "require",
           "requires_idempotency_key"]
