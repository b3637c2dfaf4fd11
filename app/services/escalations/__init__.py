"""Crisis escalations: triage (pure), the workflow, the watch log, the worker's sweeps, and
the reads. Other modules use them as `escalations.<name>`: the names are re-exported here."""

from app.services.escalations.sweeps import breach_sweep, watch_sweep
from app.services.escalations.triage import triage
from app.services.escalations.views import (
    VIEW_FIELDS,
    etag_version,
    get,
    list_,
    timeline,
    view,
    views,
)
from app.services.escalations.watch import gaps, observe, watch
from app.services.escalations.workflow import (
    ESCALATION_FLOW,
    assign,
    change_tier,
    link_subject,
    raise_,
    transition,
)

__all__ = [
    "ESCALATION_FLOW",
    "VIEW_FIELDS",
    "assign",
    "breach_sweep",
    "change_tier",
    "etag_version",
    "gaps",
    "get",
    "link_subject",
    "list_",
    "observe",
    "raise_",
    "timeline",
    "transition",
    "triage",
    "view",
    "views",
    "watch",
    "watch_sweep",
]
