"""Vocabulary shared by several aggregates, and helpers for columns."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict
from sqlalchemy import Column
from sqlmodel import Field

from app.db import JSONVariant, UTCDateTime, utcnow


class Network(StrEnum):
    incarcerated = "incarcerated"
    staff = "staff"


class Role(StrEnum):
    admin = "admin"
    coordinator = "coordinator"
    staff_coordinator = "staff_coordinator"
    clinician = "clinician"
    officer = "officer"
    peer_supporter = "peer_supporter"
    auditor = "auditor"
    integration = "integration"


def ts_field(*, nullable: bool = False, index: bool = False, default_now: bool = False) -> Any:
    kwargs: dict[str, Any] = {}
    if default_now:
        kwargs["default_factory"] = utcnow
    else:
        kwargs["default"] = None
    return Field(sa_column=Column(UTCDateTime(), nullable=nullable, index=index), **kwargs)


def json_field(*, default_factory: Any = list, nullable: bool = False) -> Any:
    return Field(default_factory=default_factory, sa_column=Column(JSONVariant, nullable=nullable))


class InputModel(BaseModel):
    """Base of every request body: unknown fields are refused (mass-assignment guard)."""

    model_config = ConfigDict(extra="forbid")


T = TypeVar("T")


class Page(BaseModel, Generic[T]):
    items: list[T]
    next_cursor: str | None = None


__all__ = ["InputModel", "Network", "Page", "Role", "json_field", "ts_field"]
