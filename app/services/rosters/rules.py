"""Who may hold a level of a facility's escalation chain: one pure rule, applied when a shift or
override is written and again whenever the roster is resolved (an account deactivated or moved
since is not paged, and its level may be unstaffed)."""

from __future__ import annotations

import uuid
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from app.models.common import Network, Role
from app.security.scopes import CLINICAL_HOLDERS, ON_CALL_HOLDERS, ROLE_NETWORKS

# A level whose name says "clinician" (on_call_clinician, ...) is held by clinicians only.
CLINICAL_MARK = "clinician"


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str


def is_clinical(level: str) -> bool:
    return CLINICAL_MARK in level


def holder_refusal(*, chain: Collection[str], level: str, facility_id: uuid.UUID,
                   network: str, role: str, active: bool, all_facilities: bool,
                   facility_ids: Collection[str]) -> Refusal | None:
    """Why an account may not hold `level` of this facility and network's chain, or None:
    the level is in the chain; the account is active; its role is one that holds levels
    (clinician, officer, coordinator of the network), a clinician for a clinician level; the
    role works in the network (an officer never for the staff network); the account covers the
    facility."""
    if level not in chain:
        return Refusal("unknown_level", "The level is not in the facility's escalation chain.")
    if not active:
        return Refusal("holder_inactive", "The account is not active.")
    if Role(role) not in (CLINICAL_HOLDERS if is_clinical(level) else ON_CALL_HOLDERS):
        return Refusal("holder_role", "This account's role may not hold this level.")
    if Network(network) not in ROLE_NETWORKS[Role(role)]:
        return Refusal("holder_network", "This account's role does not work in this network.")
    if not all_facilities and str(facility_id) not in {str(f) for f in facility_ids}:
        return Refusal("holder_facility", "The account does not cover this facility.")
    return None


def account_refusal(user: Any, *, chain: Collection[str], level: str, facility_id: uuid.UUID,
                    network: str) -> Refusal | None:
    """`holder_refusal` for a User row (None: a missing account is refused too)."""
    if user is None:
        return Refusal("unknown_user", "No such account.")
    return holder_refusal(chain=chain, level=level, facility_id=facility_id, network=network,
                          role=user.role, active=user.active,
                          all_facilities=user.all_facilities,
                          facility_ids=user.facility_ids or [])


def display_name(user: Any) -> str:
    """How a person on call is shown to the board and the paging gateway. Accounts carry a
    username only today; when they gain a display name, this is the one place to use it."""
    return str(user.username)
