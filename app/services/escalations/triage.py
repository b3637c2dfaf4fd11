"""The pure rules that set an escalation's urgency: the C-SSRS screener triage, and the
acknowledgement deadline a tier gets at a facility."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from app.models.escalation import Screener, Tier
from app.models.facility import DEFAULT_ACK_MINUTES


def triage(s: Screener) -> tuple[Tier, str]:
    """The published C-SSRS screener triage: yes to Q4 (intent) or Q5 (plan), or suicidal
    behaviour in the past three months, is high risk; yes to Q3 (method) or behaviour longer
    ago is moderate; yes to Q1 or Q2 alone is low; all no is low."""
    if s.intent:
        return Tier.high, "Q4 (intent) yes"
    if s.plan:
        return Tier.high, "Q5 (plan) yes"
    if s.behavior and s.behavior_within_3_months:
        return Tier.high, "Q6 (behaviour) yes, within 3 months"
    if s.thoughts_with_method:
        return Tier.moderate, "Q3 (method) yes"
    if s.behavior:
        return Tier.moderate, "Q6 (behaviour) yes, over 3 months ago"
    if s.wish_to_be_dead or s.suicidal_thoughts:
        return Tier.low, "Q1 or Q2 yes only"
    return Tier.low, "all answers no"


def ack_minutes(facility_settings: dict[str, Any], tier: str) -> int:
    """The facility's acknowledgement time for the tier (its own, else the default)."""
    return int({**DEFAULT_ACK_MINUTES, **(facility_settings.get("ack_minutes") or {})}[tier])


def ack_deadline(facility_settings: dict[str, Any], tier: str, now: datetime) -> datetime:
    return now + timedelta(minutes=ack_minutes(facility_settings, tier))
