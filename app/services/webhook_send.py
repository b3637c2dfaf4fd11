"""One webhook attempt: what a claimed delivery carries, its Standard Webhooks headers and
signatures, and the send itself (outside any transaction; the SSRF guard resolves the target
again for this attempt; no redirects; the response body is never read). Claiming, recording
and the round that drives them are `webhook_delivery`'s."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import datetime

import httpx
from standardwebhooks.webhooks import Webhook

from app.config import Settings
from app.db import utcnow
from app.services import outbound

USER_AGENT = "peerlink-webhooks/1"


@dataclass(frozen=True)
class Claimed:
    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secrets: list[str]
    body: str
    msg_id: str
    lease_until: datetime
    crisis: bool = False
    lease_owner: int | None = None


@dataclass(frozen=True)
class Outcome:
    claimed: Claimed
    status_code: int | None
    duration_ms: int
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None \
            and 200 <= self.status_code < 300


def signature_headers(c: Claimed, sent_at: datetime) -> dict[str, str]:
    signatures = " ".join(Webhook(s).sign(c.msg_id, sent_at, c.body) for s in c.secrets)
    return {"webhook-id": c.msg_id, "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signatures, "content-type": "application/json",
            "user-agent": USER_AGENT}


async def send(c: Claimed, settings: Settings, http: httpx.AsyncClient) -> Outcome:
    start = time.monotonic()

    def done(status: int | None, error: str | None) -> Outcome:
        return Outcome(c, status, int((time.monotonic() - start) * 1000), error)

    try:
        target = await outbound.resolve(c.url, settings)
    except outbound.TargetRefused as exc:
        return done(None, "address_refused" if exc.code.endswith("address_refused")
                    else exc.code.removeprefix("webhook_url_")[:32])
    headers = signature_headers(c, utcnow())
    if target.host_header:
        headers["host"] = target.host_header
    extensions = {"sni_hostname": target.sni_hostname} if target.sni_hostname else None
    try:
        async with http.stream("POST", target.url, content=c.body.encode(), headers=headers,
                               extensions=extensions) as response:
            status = response.status_code  # the body is never read
    except httpx.TimeoutException:
        return done(None, "timeout")
    except httpx.ConnectError:
        return done(None, "connect_error")
    except httpx.HTTPError:
        return done(None, "http_error")
    if 300 <= status < 400:
        return done(status, "redirect_refused")
    return done(status, None if 200 <= status < 300 else "http_status")
