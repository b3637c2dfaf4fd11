"""The referral rules, pure: the workflow table (`REFERRAL_FLOW`), which sources each role may
refer as (`source_for`), who may withdraw (`withdraw_refusal`), what a high-risk reason opens
(`escalation_for`), and whether the person can be referred at all (`person_refusal`)."""

from __future__ import annotations

from typing import Any

from app.errors import Forbidden, RuleViolation
from app.models.common import Network, Role
from app.models.escalation import Category, Tier
from app.models.participant import CustodyStatus, EmploymentStatus
from app.models.referral import HIGH_RISK_REASONS, ReferralSource, ReferralStatus
from app.security.scopes import REFERRAL_TRIAGERS, REFERRERS
from app.services.workflow import Transition, table

OPEN = frozenset({ReferralStatus.received.value, ReferralStatus.triaged.value})

REFERRAL_FLOW = table(
    Transition("triage", frozenset({ReferralStatus.received.value}),
               ReferralStatus.triaged.value, REFERRAL_TRIAGERS),
    Transition("match", frozenset({ReferralStatus.triaged.value}),
               ReferralStatus.matched.value, REFERRAL_TRIAGERS),
    Transition("decline", OPEN, ReferralStatus.declined.value, REFERRAL_TRIAGERS),
    # Anyone who refers; a referrer who does not work the queue only their own (withdraw_refusal).
    Transition("withdraw", OPEN, ReferralStatus.withdrawn.value, REFERRERS),
)

# The event and the stamp each state reached writes (once).
STAMPS = {ReferralStatus.triaged.value: "triaged", ReferralStatus.matched.value: "matched",
          ReferralStatus.declined.value: "declined", ReferralStatus.withdrawn.value: "withdrawn"}

# The sources a role may refer as; the first is the default.
SOURCES: dict[Role, tuple[ReferralSource, ...]] = {
    Role.coordinator: (ReferralSource.coordinator,),
    Role.staff_coordinator: (ReferralSource.coordinator,),
    Role.clinician: (ReferralSource.clinician,),
    Role.officer: (ReferralSource.officer,),
    Role.peer_supporter: (ReferralSource.peer, ReferralSource.self_via_peer),
    Role.integration: (ReferralSource.integration,),
}


def source_for(role: Role, given: ReferralSource | None) -> ReferralSource:
    """The referral's source: the caller's role says it; a peer supporter also says whether
    they refer someone they support (`peer`) or pass on the person's own request
    (`self_via_peer`). A source the role cannot be is 422 `source_not_allowed`."""
    allowed = SOURCES.get(role, ())
    if not allowed:
        raise Forbidden("Your role may not refer.", code="transition_not_allowed")
    if given is None:
        return allowed[0]
    if given not in allowed:
        raise RuleViolation(f"A {role.value} refers as {' or '.join(s.value for s in allowed)}.",
                            code="source_not_allowed",
                            errors=[{"field": "source", "message": "not allowed for your role",
                                     "type": "source_not_allowed"}])
    return given


def withdraw_refusal(*, works_queue: bool, is_referrer: bool) -> str | None:
    """Who withdraws: a coordinator, or the one who referred."""
    if works_queue or is_referrer:
        return None
    return "Only the referrer or a coordinator withdraws a referral."


def escalation_for(reason: str) -> tuple[Category, Tier] | None:
    """What a high-risk reason opens, like a risk disclosure: an escalation at tier high."""
    category = HIGH_RISK_REASONS.get(reason)
    return (Category(category), Tier.high) if category is not None else None


def person_refusal(person: Any) -> str | None:
    """A person no longer here (archived, released, transferred, separated) is not referred."""
    if person.archived_at is not None:
        return "The person's record is archived."
    if person.network == Network.incarcerated.value:
        if person.custody_status not in (None, CustodyStatus.in_custody.value):
            return "The person is no longer in custody here."
    elif person.employment_status == EmploymentStatus.separated.value:
        return "The person no longer works here."
    return None
