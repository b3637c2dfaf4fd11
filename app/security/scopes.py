"""The scopes, and the one table that maps each role to its scopes and networks."""

from __future__ import annotations

from app.models.common import Network, Role

SCOPES: dict[str, str] = {
    "facilities:read": "Read facilities and housing units in scope",
    "facilities:write": "Create and change facilities and housing units",
    "participants:read": "Read participants in scope",
    "participants:write": "Create, change, upsert, merge and archive participants",
    "keep_apart:read": "Read keep-apart orders (security information)",
    "keep_apart:write": "Open, close and reopen keep-apart orders",
    "users:read": "Read user accounts",
    "users:write": "Create, change and deactivate user accounts",
    "clients:read": "Read API clients",
    "clients:write": "Create, change and rotate API clients",
    "audit:read": "Read the audit trail",
    "courses:read": "Read the course catalogue of your networks",
    "courses:write": "Create, change and retire courses",
    "training:read": "Read enrollments, code-of-conduct signatures and certification",
    "training:write": "Enroll participants, move enrollments along, record conduct signatures",
    "pairings:read": "Read pairings in scope (a peer supporter: their own)",
    "pairings:write": "Propose, activate, pause, resume and end pairings; see candidates",
    "sessions:read": "Read support sessions in scope (a peer supporter: their own)",
    "sessions:write": "Schedule, complete, cancel support sessions; attendance",
    "notes:read": "Ask for a confidential note's text (granted only to its author, or a "
                  "clinician through a linked disclosure or escalation)",
    "disclosures:read": "Read a participant's disclosure ledger",
    "disclosures:write": "Record a disclosure from a session",
    "topics:write": "Extend the session topic vocabulary",
    "escalations:raise": "Raise a crisis escalation (never rate-limited)",
    "escalations:read": "Read escalations in scope, shaped by role",
    "escalations:write": "Acknowledge, resolve, reopen escalations; change their tier",
    "escalations:observe": "Record and read the watch log of an escalation",
    "webhooks:read": "Read webhook endpoints and their deliveries (a client: its own)",
    "webhooks:write": "Register, change, rotate and redeliver webhooks (a client: its own)",
    "events:read": "Poll the event feed (only the events your scopes and facilities cover)",
    "rosters:read": "Read who is on call now (the board) and on-call rosters (coordinators and "
                    "admins: every shift in scope; others: their own)",
    "rosters:write": "Manage on-call shifts and overrides",
    "notifications:read": "Read an escalation notification (a page): whom to page, at which "
                          "level, for which escalation and facility (paging gateways, boards)",
    "notifications:acknowledge": "Acknowledge a page sent to you",
    "events:stream": "Hold a live stream of the events your scopes and facilities cover (a "
                     "peer supporter: the status of the escalations they raised)",
    "reports:read": "Read program reports: figures by facility, network and month, de-identified "
                    "and with small cells suppressed (coordinators: their networks; auditors: "
                    "every network)",
    "referrals:read": "Read referrals for peer support (coordinators and clinicians: those in "
                      "scope; others: the referrals they made)",
    "referrals:write": "Refer a person for peer support; withdraw a referral (the referrer, or "
                       "a coordinator)",
    "referrals:triage": "Work the referral queue: triage, match to a pairing or group, decline",
}

_ALL_NETWORKS = frozenset(Network)

ROLE_SCOPES: dict[Role, frozenset[str]] = {
    Role.admin: frozenset({
        "facilities:read", "facilities:write", "users:read", "users:write",
        "clients:read", "clients:write", "audit:read", "courses:read", "courses:write",
        "topics:write", "webhooks:read", "webhooks:write", "events:read",
        "rosters:read", "rosters:write",
    }),
    Role.coordinator: frozenset({
        "facilities:read", "participants:read", "participants:write",
        "keep_apart:read", "keep_apart:write", "courses:read", "training:read", "training:write",
        "pairings:read", "pairings:write", "sessions:read", "sessions:write", "notes:read",
        "disclosures:read", "disclosures:write", "escalations:raise", "escalations:read",
        "escalations:write", "escalations:observe", "rosters:read", "rosters:write",
        "notifications:read", "notifications:acknowledge", "events:stream", "reports:read",
        "referrals:read", "referrals:write", "referrals:triage",
    }),
    Role.staff_coordinator: frozenset({
        "facilities:read", "participants:read", "participants:write",
        "keep_apart:read", "keep_apart:write", "courses:read", "training:read", "training:write",
        "pairings:read", "pairings:write", "sessions:read", "sessions:write", "notes:read",
        "disclosures:read", "disclosures:write", "escalations:raise", "escalations:read",
        "escalations:write", "escalations:observe", "rosters:read", "rosters:write",
        "notifications:read", "notifications:acknowledge", "events:stream", "reports:read",
        "referrals:read", "referrals:write", "referrals:triage",
    }),
    Role.clinician: frozenset({"facilities:read", "participants:read", "notes:read",
                               "disclosures:read", "escalations:raise", "escalations:read",
                               "escalations:write", "escalations:observe", "rosters:read",
                               "notifications:read", "notifications:acknowledge",
                               "events:stream", "referrals:read", "referrals:write"}),
    Role.officer: frozenset({"facilities:read", "participants:read", "escalations:raise",
                             "escalations:read", "escalations:observe", "rosters:read",
                             "notifications:read", "notifications:acknowledge",
                             "events:stream", "referrals:read", "referrals:write"}),
    # A peer supporter reads only their own participant record (and its training) until
    # pairings exist.
    Role.peer_supporter: frozenset({"facilities:read", "participants:read", "courses:read",
                                    "training:read", "pairings:read", "sessions:read",
                                    "sessions:write", "notes:read", "disclosures:read",
                                    "disclosures:write", "escalations:raise",
                                    "escalations:read", "escalations:observe",
                                    "events:stream", "referrals:read", "referrals:write"}),
    Role.auditor: frozenset({"facilities:read", "audit:read", "reports:read"}),
    # The most an API client may be granted; each client holds a subset.
    Role.integration: frozenset({
        "facilities:read", "participants:read", "participants:write",
        "keep_apart:read", "keep_apart:write", "pairings:read", "escalations:read",
        "webhooks:read", "webhooks:write", "events:read", "events:stream", "notifications:read",
        "referrals:read", "referrals:write",
    }),
}

# Which network's records a role may see at all (the walls between the two networks).
# peer_supporter: the network of their own participant record; integration: per client.
ROLE_NETWORKS: dict[Role, frozenset[Network]] = {
    Role.admin: frozenset(),
    Role.coordinator: frozenset({Network.incarcerated}),
    Role.staff_coordinator: frozenset({Network.staff}),
    Role.clinician: _ALL_NETWORKS,
    Role.officer: frozenset({Network.incarcerated}),
    Role.peer_supporter: frozenset(),
    Role.auditor: frozenset(),
    Role.integration: _ALL_NETWORKS,
}


# Role groups, defined once: workflow tables and rules name these, never a list of roles.
COORDINATORS = frozenset({Role.coordinator, Role.staff_coordinator})
# Who works an escalation (acknowledge, resolve, reopen, assign, change its tier).
ESCALATION_WORKERS = frozenset({Role.clinician, *COORDINATORS})
# Who runs support sessions (schedule, complete, cancel, record attendance).
SESSION_KEEPERS = frozenset({*COORDINATORS, Role.peer_supporter})
# Who sees an escalation as its status only (no tiers, names or notes).
ESCALATION_STATUS_ONLY = frozenset({Role.peer_supporter, Role.integration})
# Who may hold a level of an escalation chain on an on-call roster (and so be paged); a
# clinician level only CLINICAL_HOLDERS (services/rosters/rules.holder_refusal).
ON_CALL_HOLDERS = frozenset({Role.clinician, Role.officer, *COORDINATORS})
CLINICAL_HOLDERS = frozenset({Role.clinician})
# Who manages rosters (every shift in scope); other readers see their own shifts only.
ROSTER_MANAGERS = frozenset({Role.admin, *COORDINATORS})

# Who reads reports of every network, de-identified (reports carry no names, ids or dates finer
# than a month for anyone; these roles read no other record of the networks).
DEIDENTIFIED_READERS = frozenset({Role.auditor})

# Referrals: who works the queue (triage, match, decline; withdraw any) and who reads every
# referral in their walls; the other referrers (REFERRERS) read and withdraw their own.
REFERRAL_TRIAGERS = COORDINATORS
REFERRAL_READERS = frozenset({*COORDINATORS, Role.clinician})
REFERRERS = frozenset({*COORDINATORS, Role.clinician, Role.officer, Role.peer_supporter,
                       Role.integration})

ACCOUNT_SCOPES = frozenset({"users:read", "users:write", "clients:read", "clients:write"})


def scopes_for(role: Role, all_facilities: bool) -> frozenset[str]:
    """The role's scopes; account administration only for an all-facilities admin."""
    scopes = ROLE_SCOPES[role]
    return scopes if all_facilities else scopes - ACCOUNT_SCOPES
