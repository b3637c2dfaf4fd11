"""State machines as data: each workflow is a table of actions (from which states, to which
state, which roles may take it), read by one function."""

from __future__ import annotations

from dataclasses import dataclass

from app.errors import Conflict, Forbidden
from app.models.common import Role


@dataclass(frozen=True)
class Transition:
    action: str
    sources: frozenset[str]
    target: str
    roles: frozenset[Role]


def table(*transitions: Transition) -> dict[str, Transition]:
    return {t.action: t for t in transitions}


def step(workflow: dict[str, Transition], action: str, current: str, role: Role) -> str:
    """The state `action` leads to from `current`, or the refusal: 403 for a role the table
    does not name, 409 `invalid_transition` for a state it does not start from."""
    t = workflow[action]
    if role not in t.roles:
        raise Forbidden(f"Your role may not {action} this record.", code="transition_not_allowed")
    if current not in t.sources:
        raise Conflict(f"Cannot {action} from {current}.", code="invalid_transition",
                       current_state=current)
    return t.target
