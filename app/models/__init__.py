"""Table models and API schemas, one module per aggregate; importing this registers every table."""

from app.models.account import ApiClient, RefreshToken, RevokedAccessToken, User
from app.models.audit import AuditEvent, OutboxEvent
from app.models.facility import Facility, HousingUnit
from app.models.keep_apart import KeepApartOrder
from app.models.participant import Participant, ParticipantExternalId

__all__ = [
    "ApiClient", "AuditEvent", "Facility", "HousingUnit", "KeepApartOrder", "OutboxEvent",
    "Participant", "ParticipantExternalId", "RefreshToken", "RevokedAccessToken", "User",
]
from app.models.training import ConductSignature, Course, Enrollment  # noqa: E402

__all__ += ["ConductSignature", "Course", "Enrollment"]
from app.models.pairing import Pairing, PairingTransition  # noqa: E402

__all__ += ["Pairing", "PairingTransition"]
from app.models.support_session import (  # noqa: E402
    Disclosure,
    SessionAttendee,
    SessionTopic,
    SupportSession,
)

__all__ += ["Disclosure", "SessionAttendee", "SessionTopic", "SupportSession"]
from app.models.escalation import Escalation, EscalationEvent, Observation  # noqa: E402

__all__ += ["Escalation", "EscalationEvent", "Observation"]
from app.models.idempotency import IdempotencyKey  # noqa: E402

__all__ += ["IdempotencyKey"]
from app.models.webhook import WebhookAttempt, WebhookDelivery, WebhookEndpoint  # noqa: E402

__all__ += ["WebhookAttempt", "WebhookDelivery", "WebhookEndpoint"]
from app.models.import_job import ImportJob  # noqa: E402

__all__ += ["ImportJob"]
from app.models.roster import OnCallOverride, OnCallShift  # noqa: E402

__all__ += ["OnCallOverride", "OnCallShift"]
from app.models.notification import EscalationNotification  # noqa: E402

__all__ += ["EscalationNotification"]
from app.models.stream_ticket import StreamTicket  # noqa: E402

__all__ += ["StreamTicket"]
from app.models.worker_job import WorkerJob  # noqa: E402

__all__ += ["WorkerJob"]
from app.models.referral import Referral  # noqa: E402

__all__ += ["Referral"]
