"""Pairings: propose, activate, pause, resume, end, with the safeguards that make matching
safe. The package's parts, each with one job:

- `rules`: the workflow table, the eligibility rules as one pure function over a pair's facts
  (`refusals`) and the gathering of those facts;
- `moves`: the one way a pairing moves (stamps, transition row, event), shared by the use
  cases and the cascades;
- `use_cases`: propose, get, list, transition;
- `candidates`: the supporters a recipient could be paired with, ranked;
- `cascades`: what releases, transfers, keep-apart orders and lapsed certificates do to
  pairings;
- `views`: what a role sees of a pairing.

Other modules use the names re-exported here (`pairings.cascade`, `pairings.refusals`...)."""

from app.services.pairing_rules import PAIRING_FLOW, Facts, SupporterRow, refusals
from app.services.pairings.candidates import candidates
from app.services.pairings.cascades import (
    cascade,
    certification_sweep,
    end_between,
    end_between_pairs,
    end_keep_apart_conflicts,
    pause_keep_apart_conflicts,
)
from app.services.pairings.moves import apply
from app.services.pairings.use_cases import get, list_, propose, transition
from app.services.pairings.views import history, one_seen_by, seen_by

__all__ = [
    "PAIRING_FLOW",
    "Facts",
    "SupporterRow",
    "apply",
    "candidates",
    "cascade",
    "certification_sweep",
    "end_between",
    "end_between_pairs",
    "end_keep_apart_conflicts",
    "get",
    "history",
    "list_",
    "one_seen_by",
    "pause_keep_apart_conflicts",
    "propose",
    "refusals",
    "seen_by",
    "transition",
]
