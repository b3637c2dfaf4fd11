"""Every domain event type, one line each: `type -> what happened` (and what `data` carries
besides the envelope's `id`, `entity_type`, `facility_id` and `network`). The registry the
services' EVENT_TYPES, the contract's EventType enum and its `webhooks` section are built from;
Writer.emit refuses a type that is not here, and tests/test_event_types.py reads the source
for every type emitted.

A new event type: add one line `"family.what_happened": "What happened.",` below (its family,
the part before the dot, must have a read scope in services/events.FAMILY_SCOPES).
"""

from __future__ import annotations

EVENTS: dict[str, str] = {
    "participant.created": "A participant was created.",
    "participant.updated": "A participant changed; `data.changed` lists the fields.",
    "participant.released": "A participant left custody (or employment).",
    "participant.transferred": "A participant moved to another facility.",
    "participant.archived": "A participant's record was archived.",
    "participant.merged": "A duplicate was merged into this participant; "
                          "`data.duplicate_id` is the record merged away.",
    "keep_apart.opened": "A keep-apart order was opened.",
    "keep_apart.closed": "A keep-apart order was closed.",
    "pairing.proposed": "A pairing was proposed.",
    "pairing.activated": "A pairing became active.",
    "pairing.paused": "A pairing was paused.",
    "pairing.resumed": "A paused pairing became active again.",
    "pairing.ended": "A pairing ended.",
    "escalation.created": "An escalation was raised.",
    "escalation.acknowledged": "An escalation was acknowledged.",
    "escalation.resolved": "An escalation was resolved.",
    "escalation.reopened": "A resolved escalation was reopened.",
    "escalation.assigned": "An escalation was assigned to someone.",
    "escalation.tier_changed": "An escalation's tier changed.",
    "escalation.breached": "An escalation was not acknowledged in time.",
    "escalation.subject_linked": "An escalation raised without a subject was linked to one.",
    "escalation.unstaffed": "No one holds the on-call level an escalation must page; "
                            "`data.level` and `data.notify` name it.",
    "escalation.paged": "Someone was paged about an escalation; `data.escalation_id`, "
                        "`data.level`, `data.user_id`, `data.attempt`.",
    "escalation.page_acknowledged": "A page was acknowledged; `data.escalation_id`, "
                                    "`data.level`, `data.user_id`.",
    "observation.missed": "A scheduled observation of an escalation's subject is overdue.",
    "support_session.scheduled": "A support session was scheduled.",
    "support_session.completed": "A support session took place.",
    "support_session.cancelled": "A support session was cancelled.",
    "support_session.no_show": "A support session was marked no-show.",
    "disclosure.recorded": "A disclosure was recorded at a support session.",
    "enrollment.completed": "A training enrollment was completed.",
    "certification.granted": "A supporter became certified; `data.until` is its end date.",
    "certification.lapsed": "A supporter's certification lapsed.",
    "webhook_endpoint.disabled": "A webhook endpoint was disabled; `data.reason` says why.",
    "referral.received": "A referral was received.",
    "referral.triaged": "A referral was triaged.",
    "referral.matched": "A referral was matched with a supporter.",
    "referral.declined": "A referral was declined.",
    "referral.withdrawn": "A referral was withdrawn.",
}
