"""What a caller may learn of a keep-apart order (DOMAIN rule 3), decided here once.

A keep-apart order is security information: those who may read the orders (`keep_apart:read`:
coordinators, and the JMS that sends them) are told that one stands in the way; everyone else
(a peer supporter above all) learns only that the match or meeting is not possible, and sees a
pairing that one ended or paused with a neutral reason.
"""

from __future__ import annotations

from app.errors import Conflict, DomainError, RuleViolation
from app.security.principal import Principal

KEEP_APART = "keep_apart"


class NotEligible(RuleViolation):
    code, title = "not_eligible", "This pairing is not possible"


def may_know_keep_aparts(principal: Principal) -> bool:
    return "keep_apart:read" in principal.scopes


def refusal(principal: Principal, code: str, detail: str, *, status: int = 422,
            hidden: str = "This pairing is not possible.") -> DomainError:
    """The error a rule's refusal becomes for this caller: a keep-apart is named only to
    those who may know of it."""
    if code == KEEP_APART and not may_know_keep_aparts(principal):
        return NotEligible(hidden)
    return Conflict(detail, code=code) if status == 409 else RuleViolation(detail, code=code)


def shown_reason(principal: Principal, reason: str | None, *, neutral: str) -> str | None:
    """A pause or end reason as this caller may read it."""
    if reason == KEEP_APART and not may_know_keep_aparts(principal):
        return neutral
    return reason
