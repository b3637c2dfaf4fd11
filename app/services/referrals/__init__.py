"""Referrals: a person referred for peer support, the workflow a coordinator works them through
(rules.py: the table and the pure rules), and the queue (views.py). Other modules use them as
`referrals.<name>`."""

from app.services.referrals.rules import REFERRAL_FLOW
from app.services.referrals.use_cases import refer, transition
from app.services.referrals.views import get, list_, view

__all__ = ["REFERRAL_FLOW", "get", "list_", "refer", "transition", "view"]
