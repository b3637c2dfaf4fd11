"""Support sessions: one-to-one and group meetings, their attendance, wellbeing, topics and
confidential notes, disclosures, and a pairing's outcomes.

  scheduling   schedule, attendees, complete/cancel/no-show (SESSION_FLOW), who may meet,
               and the cancel of ended pairings' sessions (asked for by pairings)
  notes        the audited read of a confidential note's text (DOMAIN rule 7)
  disclosures  recording a disclosure (a risk one opens an escalation), a person's ledger
  reads        the scoped base query, single reads, the list, a pairing's summary
  topics       the topic vocabulary

Callers use the package: `from app.services import support_sessions`.
"""

from __future__ import annotations

from app.services.support_sessions.disclosures import disclosures_of, record_disclosure
from app.services.support_sessions.notes import read_note
from app.services.support_sessions.reads import get, list_, sessions, summary, to_reads
from app.services.support_sessions.scheduling import (
    SESSION_FLOW,
    add_attendee,
    cancel_for_ended_pairings,
    schedule,
    transition,
)
from app.services.support_sessions.topics import add_topic, list_topics

__all__ = [
    "SESSION_FLOW",
    "add_attendee",
    "add_topic",
    "cancel_for_ended_pairings",
    "disclosures_of",
    "get",
    "list_",
    "list_topics",
    "read_note",
    "record_disclosure",
    "schedule",
    "sessions",
    "summary",
    "to_reads",
    "transition",
]
