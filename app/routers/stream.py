"""/v1/stream: the live stream (Server-Sent Events), and the tickets browsers open it with.

Who may hold one (`events:stream`): boards (officers, clinicians, coordinators: the events of
their scopes, facilities and networks, as on the lists) and peer supporters' tablets (the
status of the escalations they raised); integration clients granted the scope. Scripts send
`Authorization: Bearer`; a browser's EventSource cannot, so it first POSTs for a ticket."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request, Response, Security, status
from fastapi.security import SecurityScopes
from sse_starlette import EventSourceResponse

from app.deps import Principal, SessionDep, StreamsDep, require
from app.models.stream_ticket import StreamTicketRead
from app.routemarks import NoIdempotencyKey
from app.routers.common import AUTHED, problems
from app.security.principal import check_scopes, oauth2_scheme
from app.services import events as events_svc
from app.services.pagination import decode_int_cursor
from app.services.stream import SCOPE, Caller

router = APIRouter(prefix="/v1/stream", tags=["stream"], responses=AUTHED)


async def stream_caller(
    security_scopes: SecurityScopes, request: Request, streams: StreamsDep,
    ticket: Annotated[str | None, Query(
        max_length=200, description="A ticket from `POST /v1/stream/tickets` (browsers: "
        "EventSource cannot send an Authorization header). Single use; without it, send "
        "`Authorization: Bearer`.")] = None,
    token: str | None = Depends(oauth2_scheme),
) -> Caller:
    """The stream's authenticator: a ticket, or the bearer token, then the route's scopes."""
    caller = await streams.authenticate(token=token, ticket=ticket)
    request.state.principal = caller.principal
    check_scopes(caller.principal, security_scopes)
    return caller


_SSE = {"description": "`text/event-stream`: one message per event (`id:` the event feed's "
                       "cursor, `event:` its type, `data:` the thin event as JSON, the same as "
                       "`GET /v1/events` items), and a comment line as heartbeat.",
        "content": {"text/event-stream": {"schema": {"type": "string"}}}}


@router.get("", response_class=EventSourceResponse, responses={200: _SSE})
async def open_event_stream(
    streams: StreamsDep,
    caller: Caller = Security(stream_caller, scopes=[SCOPE]),
    last_event_id: Annotated[str | None, Header(
        alias="Last-Event-ID", max_length=512, description="The `id:` of the last message "
        "received: what came after it is sent first (EventSource sends it when it "
        "reconnects)")] = None,
    after: Annotated[str | None, Query(
        max_length=512, description="The same, for a new EventSource (which cannot set "
        "Last-Event-ID): an event's `id:`, or a `next_cursor` of `GET /v1/events`. "
        "Last-Event-ID wins. Neither: from now on")] = None,
    types: Annotated[str | None, Query(max_length=2000, description="Comma-separated event "
                                       "types; omitted: every type you may see")] = None,
) -> EventSourceResponse:
    """The events you may see (the same walls as the lists and `GET /v1/events`), pushed as
    they commit: first those after `Last-Event-ID` (or `after`), then a `: live` comment, then
    live, with no gap and no duplicate between the two. A heartbeat comment comes every 15 s;
    the stream closes when the token that opened it expires or is revoked, when the account is
    deactivated or loses the scope, or when the client reads too slowly: reconnect with the
    last `id:` and nothing is lost. Peer supporters receive the status changes of the
    escalations they raised."""
    wanted = [t.strip() for t in types.split(",") if t.strip()] if types else None
    if wanted is not None:
        events_svc.check_types(wanted)
    start = decode_int_cursor(last_event_id or after, "event")
    heartbeat = streams.settings.stream_heartbeat_seconds
    return EventSourceResponse(streams.open(caller, after=start, types=wanted), ping=0,
                               send_timeout=max(2 * heartbeat, 10.0))


# A ticket is a credential: never stored for a replay (a retry simply gets another ticket).
@router.post("/tickets", status_code=status.HTTP_201_CREATED, response_model=StreamTicketRead,
             responses=problems(401), dependencies=[NoIdempotencyKey])
async def create_stream_ticket(
    session: SessionDep, streams: StreamsDep, response: Response,
    principal: Principal = require(SCOPE),
    token: str | None = Depends(oauth2_scheme),
) -> StreamTicketRead:
    """A ticket for one `GET /v1/stream?ticket=...` (a browser's EventSource), valid for 30
    seconds and once: a used, expired or unknown ticket answers 401 `invalid_stream_ticket`.
    The stream is this token's: it closes when the token expires or is revoked."""
    ticket, expires_at = await streams.issue_ticket(session=session, principal=principal,
                                                    token=token or "")
    response.headers["Cache-Control"] = "no-store"
    return StreamTicketRead(ticket=ticket, expires_at=expires_at)
