"""What every router shares: documented error responses, pagination parameters, ETags."""

from __future__ import annotations

import re
from typing import Annotated, Any

import orjson
from fastapi import Header, Query, Response
from pydantic import AwareDatetime, BeforeValidator

from app.errors import PROBLEM
from app.services.pagination import DEFAULT_LIMIT, MAX_LIMIT

_DESCRIPTIONS = {
    401: "Missing, invalid, expired or revoked credentials",
    403: "The token lacks a scope this operation needs",
    404: "No such record, or outside your facilities or network",
    409: "Conflicts with the current state",
    412: "If-Match does not match the current version",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input or a broken rule (see code and errors)",
    429: "Too many requests (see Retry-After)",
    500: "Internal error (quote the request id)",
}


def problems(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return {s: {"description": _DESCRIPTIONS[s],
                "content": {PROBLEM: {"schema": {"$ref": "#/components/schemas/Problem"}}}}
            for s in statuses}


AUTHED = problems(401, 403, 422, 500)

Limit = Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Page size")]
Cursor = Annotated[str | None, Query(max_length=512, description="next_cursor of the previous "
                                                                 "page")]
IfMatch = Annotated[str | None, Header(description="ETag from a previous read; 412 on mismatch")]
DEFAULT = DEFAULT_LIMIT

# Query parameters parsed as strictly as the contract states them: pydantic alone also takes
# `0.5` (a Unix time) or a bare date for a date-time, and `0`, `yes`, `off` for a boolean.
_RFC3339 = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})?")


def _date_time(value: Any) -> Any:
    if isinstance(value, str) and not _RFC3339.fullmatch(value):
        raise ValueError("Input should be an RFC 3339 date-time")
    return value


def _boolean(value: Any) -> Any:
    if isinstance(value, str):
        if value not in ("true", "false"):
            raise ValueError("Input should be true or false")
        return value == "true"
    return value


DateTimeText = BeforeValidator(_date_time)  # an RFC 3339 date-time (offset checked apart)
Instant = Annotated[AwareDatetime, DateTimeText]  # an RFC 3339 date-time with its offset
Flag = Annotated[bool, BeforeValidator(_boolean)]  # `true` or `false`


def set_etag(response: Response, version: int) -> None:
    response.headers["ETag"] = f'"{version}"'


def json_page(items: list[dict[str, Any]], next_cursor: str | None) -> Response:
    """A page whose items are already plain dicts in their read model's shape and field order
    (str, int, bool, None, UUID, UTC datetimes, dates, lists and dicts of those), written as
    that model would write it, without validating and serialising every row again: orjson
    writes the same bytes as pydantic for these types (compact, UTC as `Z`, UUIDs hyphenated,
    zero microseconds omitted). For the hottest lists; their tests compare each item with its
    single read, which goes through the model. The route keeps its `response_model` (the
    contract)."""
    return Response(orjson.dumps({"items": items, "next_cursor": next_cursor},
                                 option=orjson.OPT_UTC_Z), media_type="application/json")
