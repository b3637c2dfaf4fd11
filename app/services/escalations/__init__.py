"""Crisis escalations: triage (pure), the workflow, the watch log, the worker's sweeps, and
the reads. Other modules use them as `escalations.<name>`; the names are re-exported here."""

from app.services.escalations.sweeps import breach_sweep, watch_sweep
from app.services.escalations.triage import ack_deadline, ack_minutes, triage
from app.services.escalations.views import VIEW_FIELDS, escalations, get, list_, timeline
from app.services.escalations.watch import gaps, observe, watch
from app.services.escalations.workflow import (
    ESCALATION_FLOW,
    assign,
    change_tier,
    emit,
    raise_,
    timeline_entry,
    transition,
)

__all__ = [
    "ESCALATION_FLOW",
    "VIEW_FIELDS",
    "ack_deadline",
    "ack_minutes",
    "assign",
    "breach_sweep",
    "change_tier",
    "emit",
    "escalations",
    "gaps",
    "get",
    "list_",
    "observe",
    "raise_",
    "timeline",
    "timeline_entry",
    "transition",
    "triage",
    "watch",
    "watch_sweep",
]
