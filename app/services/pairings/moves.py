"""The one way a pairing moves (rules already checked): stamps, a transition row, the event.
Shared by the endpoints (propose, transition) and the cascades."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from app.db import utcnow
from app.models import Pairing, PairingTransition
from app.security.principal import Principal
from app.services import support_sessions
from app.services.writer import Writer

SYSTEM = "system"  # who made a move no caller asked for (a cascade, the sweep)

EVENTS = {"activate": "pairing.activated", "pause": "pairing.paused",
          "resume": "pairing.resumed", "end": "pairing.ended"}


def transition_row(pairing: Pairing, action: str, before: str | None,
                   principal: Principal | None, reason: str | None) -> PairingTransition:
    return PairingTransition(pairing_id=pairing.id, action=action, from_status=before,
                             to_status=pairing.status, at=utcnow(),
                             by=principal.actor if principal else SYSTEM, reason=reason)


def emit(writer: Writer, event_type: str, pairing: Pairing) -> None:
    writer.emit(event_type, "pairing", pairing.id, facility_id=pairing.facility_id,
                network=pairing.network)


def apply(session: AsyncSession, w: Writer, pairing: Pairing, action: str, target: str,
          principal: Principal | None, *, reason: str | None, note: str | None = None) -> None:
    """Moves a pairing (rules already checked): stamps, transition row, event. Shared by the
    endpoints and the cascades (release, transfer, keep-apart, availability, lapse). An ended
    pairing's scheduled sessions are cancelled by support sessions (they write their rows)."""
    now, by = utcnow(), principal.actor if principal else SYSTEM
    before = pairing.status
    if action == "activate" and pairing.activated_at is None:
        pairing.activated_at, pairing.activated_by = now, by
    if action == "end":
        pairing.ended_at, pairing.ended_by, pairing.end_reason = now, by, reason
    pairing.pause_reason = reason if action == "pause" else None
    pairing.status = target
    pairing.version += 1
    pairing.updated_at = now
    session.add(transition_row(pairing, action, before, principal, note or reason))
    emit(w, EVENTS[action], pairing)
    if action == "end":
        w.after_flush_for("cancel_scheduled_sessions", pairing,
                          lambda ended: support_sessions.cancel_for_ended_pairings(
                              session, w, ended))
