"""Small helpers the services share: optimistic concurrency and IntegrityError mapping."""

from __future__ import annotations

from typing import Any

from app.errors import Conflict, PreconditionFailed


def check_version(current: int, if_match: str | None) -> None:
    """If-Match carries the ETag we sent ("<version>"); a mismatch is 412."""
    if if_match is None:
        return
    tags = [t.strip().removeprefix("W/").strip('"') for t in if_match.split(",")]
    if "*" in tags:
        return
    if str(current) not in tags:
        raise PreconditionFailed("The resource changed since you read it; fetch it again.",
                                 code="version_mismatch")


def etag(version: int) -> str:
    return f'"{version}"'


def integrity_conflict(exc: Exception, what: str) -> Conflict:
    return Conflict(f"{what} already exists.", code="already_exists")


def changed_fields(obj: Any, values: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if getattr(obj, k) != v}
