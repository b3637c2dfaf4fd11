"""Optimistic concurrency: the If-Match check every versioned write shares."""

from __future__ import annotations

from app.errors import PreconditionFailed


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
