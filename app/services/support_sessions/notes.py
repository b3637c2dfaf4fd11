"""The confidential note's text (DOMAIN rule 7): readable by its author, and by a clinician
when the session is linked to a disclosure (or, once they exist, an escalation); every read,
and every refused attempt, is audited."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from app.errors import NotFound
from app.models import Disclosure
from app.models.support_session import NoteRead
from app.security.notes import NoteCipher
from app.security.principal import Principal
from app.services.audit import AuditEntry, Place, append, place_of_record
from app.services.support_sessions.reads import sessions
from app.services.support_sessions.tables import DISCLOSURES, SESSIONS


async def read_note(*, session: AsyncSession, maker: Any, cipher: NoteCipher,
                    principal: Principal, session_id: uuid.UUID) -> NoteRead:
    """Author, or a clinician through a linked disclosure; anyone else is refused. Both the
    read and the refusal are audited (in a transaction of their own: a GET's session reads)."""
    s = (await session.execute(sessions(principal).where(SESSIONS.id == session_id))
         ).scalar_one_or_none()
    allowed = False
    if s is not None and s.note_ciphertext is not None:
        if s.note_author == principal.actor:
            allowed = True
        elif principal.is_clinician:
            linked = (await session.execute(select(func.count()).select_from(
                Disclosure.__table__).where(DISCLOSURES.session_id == s.id))).scalar_one()
            allowed = linked > 0
    # The refusal of a note outside the caller's scope is stamped with its session's facility
    # all the same, so only that facility's auditors learn of the id.
    place = Place(s.facility_id, s.network) if s is not None else \
        await place_of_record(session, {"session_id": session_id})
    # Release the request's read (on SQLite it holds the database lock) before the audit row
    # is written in a transaction of its own; the loaded row stays usable.
    await session.close()
    entry = AuditEntry(action="support_session.note_read",
                       outcome="success" if allowed else "denied",
                       entity_type="support_session", entity_id=str(session_id),
                       facility_id=place.facility_id if place else None,
                       network=place.network if place else None)
    async with maker() as audit_session:
        await append(audit_session, [entry], actor_type=principal.kind,
                     actor_id=str(principal.id), role=principal.role.value,
                     client_id=principal.name if principal.kind == "client" else None)
        await audit_session.commit()
    if not allowed or s is None:
        refused = NotFound("No note you may read.")
        refused.audited = True
        raise refused
    text = cipher.decrypt(s.note_ciphertext, s.note_wrapped_key,  # type: ignore[arg-type]
                          s.note_key_id, s.id.bytes)  # type: ignore[arg-type]
    return NoteRead(session_id=s.id, text=text, author=s.note_author or "",
                    written_at=s.note_written_at)  # type: ignore[arg-type]
