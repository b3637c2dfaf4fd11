"""The columns the support sessions package's queries name, and the pairing states in which
a supporter reads their recipient's disclosure ledger."""

from __future__ import annotations

from app.models import (
    Disclosure,
    KeepApartOrder,
    Pairing,
    SessionAttendee,
    SessionTopic,
    SupportSession,
)
from app.models.pairing import PairingStatus
from app.services import scoping

SESSIONS = SupportSession.__table__.c
ATTENDEES = SessionAttendee.__table__.c
PAIRINGS = Pairing.__table__.c
ORDERS = KeepApartOrder.__table__.c
DISCLOSURES = Disclosure.__table__.c
TOPICS = SessionTopic.__table__.c
PEOPLE = scoping.P

# A pairing whose supporter reads the recipient's ledger (a pause does not take it away; the
# two meet in a session only while it is active: scheduling._pair_may_meet).
SUPPORTING = (PairingStatus.active.value, PairingStatus.paused.value)
