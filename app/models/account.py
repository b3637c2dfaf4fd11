"""Accounts that call the API: users (people), API clients (machines) and their tokens."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, SecretStr
from pydantic import Field as PField
from sqlmodel import Field, SQLModel

from app.db import uuid7
from app.errors import Problem
from app.models.common import InputModel, Network, Role, json_field, ts_field
from app.models.participant import Code


class User(SQLModel, table=True):
    __tablename__ = "app_user"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    username: str = Field(max_length=64, unique=True)
    password_hash: str = Field(max_length=255)
    role: str = Field(max_length=32)
    all_facilities: bool = False
    facility_ids: list = json_field()
    participant_id: uuid.UUID | None = Field(default=None, foreign_key="participant.id")
    active: bool = True
    version: int = 1
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class ApiClient(SQLModel, table=True):
    __tablename__ = "api_client"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    client_id: str = Field(max_length=64, unique=True)
    name: str = Field(max_length=200)
    secret_hash: str = Field(max_length=255)
    scopes: list = json_field()
    all_facilities: bool = False
    facility_ids: list = json_field()
    networks: list = json_field()
    active: bool = True
    version: int = 1
    secret_rotated_at: datetime = ts_field(default_now=True)
    created_at: datetime = ts_field(default_now=True)
    updated_at: datetime = ts_field(default_now=True)


class RefreshToken(SQLModel, table=True):
    """Opaque refresh tokens, stored hashed; one family per login, rotated on each use."""

    __tablename__ = "refresh_token"

    id: uuid.UUID = Field(default_factory=uuid7, primary_key=True)
    token_hash: str = Field(max_length=64, unique=True)
    family_id: uuid.UUID = Field(index=True)
    user_id: uuid.UUID = Field(foreign_key="app_user.id", index=True)
    scope: str = Field(max_length=2000)
    created_at: datetime = ts_field(default_now=True)
    expires_at: datetime = ts_field()
    used_at: datetime | None = ts_field(nullable=True)
    revoked_at: datetime | None = ts_field(nullable=True)


class RevokedAccessToken(SQLModel, table=True):
    __tablename__ = "revoked_access_token"

    jti: str = Field(max_length=64, primary_key=True)
    expires_at: datetime = ts_field(index=True)


# --- API schemas -------------------------------------------------------------------------

class UserCreate(InputModel):
    username: str = PField(min_length=3, max_length=64, pattern=r"^[a-z0-9_.@-]+$")
    password: SecretStr = PField(min_length=12, max_length=256)
    role: Role
    facility_codes: list[Code] | None = PField(
        None, description="Facilities the user may act in; omitted or null means all facilities."
    )
    participant_id: uuid.UUID | None = None


class UserUpdate(InputModel):
    password: SecretStr | None = PField(None, min_length=12, max_length=256)
    role: Role | None = None
    facility_codes: list[Code] | None = None
    all_facilities: bool | None = None
    participant_id: uuid.UUID | None = None


class UserRead(BaseModel):
    id: uuid.UUID
    username: str
    role: Role
    all_facilities: bool
    facility_ids: list[uuid.UUID]
    participant_id: uuid.UUID | None
    active: bool
    version: int
    created_at: datetime
    updated_at: datetime

    model_config = {"from_attributes": True}


class ClientCreate(InputModel):
    name: str = PField(min_length=1, max_length=200)
    scopes: list[str] = PField(min_length=1, max_length=50)
    facility_codes: list[Code] | None = None
    networks: list[Network] = PField(default_factory=lambda: [Network.incarcerated], min_length=1)


class ClientUpdate(InputModel):
    name: str | None = PField(None, min_length=1, max_length=200)
    scopes: list[str] | None = PField(None, min_length=1, max_length=50)
    facility_codes: list[Code] | None = None
    all_facilities: bool | None = None
    networks: list[Network] | None = PField(None, min_length=1)
    active: bool | None = None


class ClientRead(BaseModel):
    id: uuid.UUID
    client_id: str
    name: str
    scopes: list[str]
    all_facilities: bool
    facility_ids: list[uuid.UUID]
    networks: list[Network]
    active: bool
    version: int
    secret_rotated_at: datetime
    created_at: datetime

    model_config = {"from_attributes": True}


class ClientWithSecret(ClientRead):
    client_secret: str = PField(description="Shown once; store it now.")


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "Bearer"
    expires_in: int
    scope: str
    refresh_token: str | None = None


class BrowserSignIn(BaseModel):
    """A person signing in through the browser session (`POST /v1/session`)."""

    username: str = PField(min_length=1, max_length=64)
    password: str = PField(min_length=1, max_length=256)
    scope: str | None = PField(None, max_length=2000, description="Space-separated scopes; "
                               "omitted: every scope of the role")


class BrowserSessionRead(BaseModel):
    """The browser session: its tokens are in httpOnly cookies, never in this body."""

    csrf_token: str = PField(description="Send it back in `X-CSRF-Token` on every request "
                             "but GET/HEAD/OPTIONS (also readable from the "
                             "`__Host-peerlink-csrf` cookie)")
    expires_in: int = PField(description="Seconds the access cookie lives; then "
                             "`POST /v1/session/refresh`")
    scope: str


class OAuthProblem(Problem):
    """A token endpoint error: problem+json carrying RFC 6749 section 5.2's members too."""

    error: str = PField(description="RFC 6749 5.2 error code, the same as `code`: "
                                    "invalid_request, invalid_client, invalid_grant, "
                                    "invalid_scope or unsupported_grant_type")
    error_description: str = PField(description="Human-readable explanation, the same as "
                                                "`detail`")


class MeRead(BaseModel):
    subject: str
    kind: str
    role: Role
    scopes: list[str]
    all_facilities: bool
    facility_ids: list[uuid.UUID]
    networks: list[Network]
    participant_id: uuid.UUID | None
    username: str | None = None
    client_id: str | None = None
