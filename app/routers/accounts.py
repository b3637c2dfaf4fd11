"""/v1/users and /v1/clients: accounts, administered by admins. No delete: deactivate."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, Response, status

from app.deps import Principal, SessionDep, require
from app.models.account import (
    ClientCreate,
    ClientRead,
    ClientUpdate,
    ClientWithSecret,
    UserCreate,
    UserRead,
    UserUpdate,
)
from app.models.common import Page, Role
from app.routers.common import AUTHED, DEFAULT, Cursor, Flag, IfMatch, Limit, problems, set_etag
from app.services import accounts as svc

users = APIRouter(prefix="/v1/users", tags=["users"], responses=AUTHED)
clients = APIRouter(prefix="/v1/clients", tags=["clients"], responses=AUTHED)


@users.get("", response_model=Page[UserRead])
async def list_users(session: SessionDep, principal: Principal = require("users:read"),
                     limit: Limit = DEFAULT, cursor: Cursor = None, role: Role | None = None,
                     active: Flag | None = None) -> Page[UserRead]:
    rows, nxt = await svc.list_users(session=session, limit=limit, cursor=cursor, role=role,
                                     active=active)
    return Page(items=[UserRead.model_validate(u) for u in rows], next_cursor=nxt)


@users.post("", status_code=status.HTTP_201_CREATED, response_model=UserRead,
            responses=problems(409))
async def create_user(body: UserCreate, session: SessionDep, response: Response,
                      principal: Principal = require("users:write")) -> UserRead:
    user = await svc.create_user(session=session, principal=principal, data=body)
    set_etag(response, user.version)
    response.headers["Location"] = f"/v1/users/{user.id}"
    return UserRead.model_validate(user)


@users.get("/{user_id}", response_model=UserRead, responses=problems(404))
async def get_user(user_id: uuid.UUID, session: SessionDep, response: Response,
                   principal: Principal = require("users:read")) -> UserRead:
    user = await svc.get_user(session=session, user_id=user_id)
    set_etag(response, user.version)
    return UserRead.model_validate(user)


@users.patch("/{user_id}", response_model=UserRead, responses=problems(404, 412))
async def update_user(user_id: uuid.UUID, body: UserUpdate, session: SessionDep,
                      response: Response, if_match: IfMatch = None,
                      principal: Principal = require("users:write")) -> UserRead:
    user = await svc.update_user(session=session, principal=principal, user_id=user_id,
                                 data=body, if_match=if_match)
    set_etag(response, user.version)
    return UserRead.model_validate(user)


@users.post("/{user_id}/deactivate", response_model=UserRead, responses=problems(404, 412))
async def deactivate_user(user_id: uuid.UUID, session: SessionDep, response: Response,
                          if_match: IfMatch = None,
                          principal: Principal = require("users:write")) -> UserRead:
    user = await svc.set_user_active(session=session, principal=principal, user_id=user_id,
                                     active=False, if_match=if_match)
    set_etag(response, user.version)
    return UserRead.model_validate(user)


@users.post("/{user_id}/reactivate", response_model=UserRead, responses=problems(404, 412))
async def reactivate_user(user_id: uuid.UUID, session: SessionDep, response: Response,
                          if_match: IfMatch = None,
                          principal: Principal = require("users:write")) -> UserRead:
    user = await svc.set_user_active(session=session, principal=principal, user_id=user_id,
                                     active=True, if_match=if_match)
    set_etag(response, user.version)
    return UserRead.model_validate(user)


@clients.get("", response_model=Page[ClientRead])
async def list_clients(session: SessionDep, principal: Principal = require("clients:read"),
                       limit: Limit = DEFAULT, cursor: Cursor = None) -> Page[ClientRead]:
    rows, nxt = await svc.list_clients(session=session, limit=limit, cursor=cursor)
    return Page(items=[ClientRead.model_validate(c) for c in rows], next_cursor=nxt)


@clients.post("", status_code=status.HTTP_201_CREATED, response_model=ClientWithSecret)
async def create_client(body: ClientCreate, session: SessionDep, response: Response,
                        principal: Principal = require("clients:write")) -> ClientWithSecret:
    """Creates a machine client; the secret is in this response only."""
    client, secret = await svc.create_client(session=session, principal=principal, data=body)
    response.headers["Cache-Control"] = "no-store"
    response.headers["Location"] = f"/v1/clients/{client.id}"
    return ClientWithSecret(**ClientRead.model_validate(client).model_dump(), client_secret=secret)


@clients.get("/{client_id}", response_model=ClientRead, responses=problems(404))
async def get_client(client_id: uuid.UUID, session: SessionDep, response: Response,
                     principal: Principal = require("clients:read")) -> ClientRead:
    client = await svc.get_client(session=session, client_id=client_id)
    set_etag(response, client.version)
    return ClientRead.model_validate(client)


@clients.patch("/{client_id}", response_model=ClientRead, responses=problems(404, 412))
async def update_client(client_id: uuid.UUID, body: ClientUpdate, session: SessionDep,
                        response: Response, if_match: IfMatch = None,
                        principal: Principal = require("clients:write")) -> ClientRead:
    client = await svc.update_client(session=session, principal=principal, client_id=client_id,
                                     data=body, if_match=if_match)
    set_etag(response, client.version)
    return ClientRead.model_validate(client)


@clients.post("/{client_id}/rotate-secret", response_model=ClientWithSecret,
              responses=problems(404, 412))
async def rotate_client_secret(client_id: uuid.UUID, session: SessionDep, response: Response,
                               if_match: IfMatch = None,
                               principal: Principal = require("clients:write"),
                               ) -> ClientWithSecret:
    """Issues a new secret (shown once); the old one stops working at once."""
    client, secret = await svc.rotate_client_secret(session=session, principal=principal,
                                                    client_id=client_id, if_match=if_match)
    response.headers["Cache-Control"] = "no-store"
    set_etag(response, client.version)
    return ClientWithSecret(**ClientRead.model_validate(client).model_dump(), client_secret=secret)
