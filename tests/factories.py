"""Factories: rows written straight to the test database, and real tokens signed by the
app's own key for the accounts they create."""

from __future__ import annotations

import itertools
import uuid
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import make_sync_engine, uuid7
from app.models import (
    ApiClient,
    AuditEvent,
    ConductSignature,
    Course,
    Enrollment,
    Escalation,
    EscalationNotification,
    Facility,
    HousingUnit,
    ImportJob,
    KeepApartOrder,
    OnCallOverride,
    OnCallShift,
    OutboxEvent,
    Pairing,
    Participant,
    ParticipantExternalId,
    Referral,
    SessionAttendee,
    SupportSession,
    User,
    WebhookDelivery,
    WebhookEndpoint,
)
from app.models.common import Network, Role
from app.models.keep_apart import ordered_pair
from app.models.referral import URGENCY_RANK
from app.security.notes import NoteCipher
from app.security.passwords import hash_password
from app.security.scopes import ROLE_SCOPES
from app.security.tokens import KeyRing

PASSWORD = "correct-horse-battery-staple"
_HASH = hash_password(PASSWORD)
_seq = itertools.count(1)


class Factory:
    def __init__(self, settings: Settings, keyring: KeyRing) -> None:
        self.settings = settings
        self.keyring = keyring
        self.engine = make_sync_engine(settings)

    def close(self) -> None:
        self.engine.dispose()

    def _save(self, *rows: Any) -> None:
        with Session(self.engine, expire_on_commit=False) as s:
            s.add_all(rows)
            s.commit()

    # --- records ---------------------------------------------------------------------------
    def facility(self, code: str | None = None, **kw: Any) -> Facility:
        n = next(_seq)
        f = Facility(code=code or f"F{n}", name=kw.pop("name", f"Facility {n}"),
                     timezone=kw.pop("timezone", "America/Chicago"),
                     settings=kw.pop("settings", {"caseload_cap": 5, "ack_minutes": {
                         "imminent": 5, "high": 15, "moderate": 60, "low": 1440}}), **kw)
        self._save(f)
        return f

    def unit(self, facility: Facility, code: str | None = None) -> HousingUnit:
        u = HousingUnit(facility_id=facility.id, code=code or f"U{next(_seq)}", name="Unit")
        self._save(u)
        return u

    def participant(self, facility: Facility, network: Network | str = Network.incarcerated,
                    *, external: tuple[str, str] | None = None, **kw: Any) -> Participant:
        net = Network(network)
        p = Participant(
            network=net.value, legal_name=kw.pop("legal_name", f"Person {next(_seq)}"),
            facility_id=facility.id,
            custody_status=kw.pop("custody_status",
                                  "in_custody" if net == Network.incarcerated else None),
            employment_status=kw.pop("employment_status",
                                     "employed" if net == Network.staff else None),
            date_of_birth=kw.pop("date_of_birth", date(1990, 1, 1)),
            external_ids=[{"source": external[0], "value": external[1]}] if external else [],
            **kw,
        )
        rows: list[Any] = [p]
        self._save(p)
        if external:
            rows = [ParticipantExternalId(participant_id=p.id, source=external[0],
                                          value=external[1])]
            self._save(*rows)
        return p

    def keep_apart(self, x: Participant, y: Participant, **kw: Any) -> KeepApartOrder:
        a, b = ordered_pair(x.id, y.id)
        o = KeepApartOrder(participant_a_id=a, participant_b_id=b,
                           reason=kw.pop("reason", "threat"), scope=kw.pop("scope", "facility"),
                           authorised_by="Lt. Test", opened_by="test", status_changed_by="test",
                           **kw)
        self._save(o)
        return o

    def user(self, role: Role | str, facilities: list[Facility] | None = None,
             participant: Participant | None = None, **kw: Any) -> User:
        u = User(username=kw.pop("username", f"user{next(_seq)}"), password_hash=_HASH,
                 role=Role(role).value, all_facilities=facilities is None,
                 facility_ids=[str(f.id) for f in facilities or []],
                 participant_id=participant.id if participant else None, **kw)
        self._save(u)
        return u

    def api_client(self, scopes: list[str], facilities: list[Facility] | None = None,
                   networks: list[str] | None = None) -> ApiClient:
        c = ApiClient(client_id=f"plc_test{next(_seq)}", name="JMS", secret_hash=_HASH,
                      scopes=scopes, all_facilities=facilities is None,
                      facility_ids=[str(f.id) for f in facilities or []],
                      networks=networks or ["incarcerated"])
        self._save(c)
        return c

    def course(self, *, required: bool = True, refresher: bool = False, hours: float = 8,
               network: str | None = None, **kw: Any) -> Course:
        c = Course(title=kw.pop("title", f"Course {next(_seq)}"), hours=hours, network=network,
                   required_for_certification=required, refresher=refresher, **kw)
        self._save(c)
        return c

    def enrollment(self, person: Participant, course: Course, status: str = "enrolled",
                   completed_at: datetime | None = None) -> Enrollment:
        e = Enrollment(participant_id=person.id, course_id=course.id, status=status,
                       enrolled_by="test", completed_at=completed_at,
                       completed_by="test" if completed_at else None)
        self._save(e)
        return e

    def signature(self, person: Participant, signed_on: date) -> ConductSignature:
        s = ConductSignature(participant_id=person.id, conduct_version="v1", signed_on=signed_on,
                             witnessed_by="test")
        self._save(s)
        return s

    def certified_supporter(self, facility: Facility, network: str = "incarcerated",
                            **kw: Any) -> Participant:
        """A supporter who passes every eligibility rule: required training done, conduct
        signed, available, in custody (or employed)."""
        kw.setdefault("supporter_availability", "active")
        person = self.participant(facility, network, is_supporter=True, **kw)
        with Session(self.engine, expire_on_commit=False) as s:
            c = Course.__table__.c
            required = list(s.scalars(select(Course).where(
                c.required_for_certification.is_(True), c.active.is_(True),
                c.network.is_(None) | (c.network == network))))
        for course in required or [self.course(title=f"Required {next(_seq)}")]:
            self.enrollment(person, course, status="completed", completed_at=datetime.now(UTC))
        self.signature(person, date.today())
        return person

    def recipient(self, facility: Facility, network: str = "incarcerated",
                  **kw: Any) -> Participant:
        return self.participant(facility, network, is_recipient=True, **kw)

    def pairing(self, supporter: Participant, recipient: Participant,
                status: str = "active") -> Pairing:
        p = Pairing(supporter_id=supporter.id, recipient_id=recipient.id,
                    facility_id=recipient.facility_id, network=recipient.network, status=status,
                    proposed_by="test")
        self._save(p)
        return p

    def support_session(self, pairing: Pairing | None = None, *, facility: Facility | None = None,
                        network: str = "incarcerated",
                        facilitator: Participant | None = None,
                        status: str = "scheduled") -> SupportSession:
        """A one-to-one (with the pairing's two people) or group session, scheduled unless
        `status` says otherwise (closed now, by the test)."""
        if pairing is not None:
            s = SupportSession(kind="one_to_one", pairing_id=pairing.id,
                               facilitator_id=pairing.supporter_id,
                               facility_id=pairing.facility_id, network=pairing.network,
                               scheduled_at=datetime.now(UTC), scheduled_by="test")
            people = [pairing.supporter_id, pairing.recipient_id]
        else:
            assert facility is not None
            s = SupportSession(kind="group", facilitator_id=facilitator.id if facilitator else None,
                               facility_id=facility.id, network=network,
                               scheduled_at=datetime.now(UTC), scheduled_by="test")
            people = [facilitator.id] if facilitator else []
        if status != "scheduled":
            s.status, s.closed_at, s.closed_by = status, datetime.now(UTC), "test"
        self._save(s)
        self._save(*[SessionAttendee.of(s, p) for p in people])
        return s

    def escalation(self, person: Participant | None, *, tier: str = "low", status: str = "open",
                   raised_by: str = "test", facility: Facility | None = None,
                   network: str | None = None, raised_blind: bool = False) -> Escalation:
        """About `person` (at their facility, unless `facility`), or about a place alone
        (`person` None: `facility` and `network` given)."""
        now = datetime.now(UTC)
        e = Escalation(participant_id=person.id if person else None,
                       facility_id=facility.id if facility else person.facility_id,  # type: ignore[union-attr]
                       network=network or person.network,  # type: ignore[union-attr]
                       category="self_harm", description="seen",
                       tier=tier, status=status, ack_deadline=now + timedelta(hours=1),
                       raised_by=raised_by, raised_at=now, screener=None,
                       raised_blind=raised_blind, reported={"location_text": "seen here"})
        self._save(e)
        return e

    def referral(self, person: Participant, *, status: str = "received",
                 referred_by: str = "test", urgency: str = "routine",
                 reason: str = "isolation", source: str = "coordinator",
                 received_at: datetime | None = None) -> Referral:
        """A referral of `person` at their facility, in `status` (its stamps written)."""
        now = received_at or datetime.now(UTC)
        r = Referral(facility_id=person.facility_id, network=person.network,
                     participant_id=person.id, housing_unit_id=person.housing_unit_id,
                     source=source, reason_category=reason, urgency=urgency,
                     urgency_rank=URGENCY_RANK[urgency], status=status, received_at=now,
                     referred_by=referred_by, updated_at=now)
        if status != "received":
            r.triaged_at, r.triaged_by = now, "test"
        if status in ("matched", "declined", "withdrawn"):
            setattr(r, f"{status}_at", now)
            setattr(r, f"{status}_by", "test")
        if status == "declined":
            r.decline_reason = "other"
        self._save(r)
        return r

    def outbox_event(self, type_: str, *, facility: Facility | None = None,
                     network: str | None = "incarcerated", entity_type: str = "participant",
                     entity_id: uuid.UUID | None = None, **data: Any) -> OutboxEvent:
        e = OutboxEvent(event_id=uuid7(), type=type_, occurred_at=datetime.now(UTC),
                        entity_type=entity_type, entity_id=entity_id or uuid7(),
                        facility_id=facility.id if facility else None, network=network, data=data)
        self._save(e)
        return e

    def webhook_endpoint(self, owner: User | ApiClient, *, url: str = "http://127.0.0.1:9/hook",
                         event_types: list[str] | None = None,
                         **kw: Any) -> tuple[WebhookEndpoint, str]:
        """An endpoint (events from now on) and its secret."""
        from app.services.webhooks import new_secret, seal

        with Session(self.engine) as s:
            newest = s.execute(select(func.max(OutboxEvent.id))).scalar() or 0
        ep = WebhookEndpoint(owner_kind="client" if isinstance(owner, ApiClient) else "user",
                             owner_id=owner.id, url=url,
                             event_types=event_types or ["webhook_endpoint.disabled"],
                             secret_ciphertext=b"", secret_wrapped_key=b"", secret_key_id="",
                             last_event_id=kw.pop("last_event_id", newest), created_by="test",
                             **kw)
        secret = new_secret()
        seal(NoteCipher.from_settings(self.settings), ep, secret, None)
        self._save(ep)
        return ep, secret

    def webhook_delivery(self, endpoint: WebhookEndpoint, event: OutboxEvent,
                         status: str = "delivered") -> WebhookDelivery:
        d = WebhookDelivery(endpoint_id=endpoint.id, event_id=event.id, event_type=event.type,
                            entity_id=event.entity_id,
                            status=status, attempts=1, next_attempt_at=datetime.now(UTC))
        self._save(d)
        return d

    def import_job(self, account: User | ApiClient, **kw: Any) -> ImportJob:
        kind = "client" if isinstance(account, ApiClient) else "user"
        j = ImportJob(kind=kw.pop("kind", "participants"), format=kw.pop("format", "csv"),
                      created_by=f"{kind}:{account.id}", status=kw.pop("status", "completed"),
                      **kw)
        self._save(j)
        return j

    def shift(self, facility: Facility, user: User, level: str = "on_call_clinician", *,
              network: str = "incarcerated", start: str = "00:00", minutes: int = 1440,
              weekdays: list[str] | None = None, **kw: Any) -> OnCallShift:
        """A recurring on-call shift; by default every day, all day (wall-clock 24 h)."""
        h, m = (int(x) for x in start.split(":"))
        s = OnCallShift(facility_id=facility.id, network=network, level=level, user_id=user.id,
                        weekdays=weekdays or ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                        start_time=time(h, m), duration_minutes=minutes,
                        valid_from=kw.pop("valid_from", date(2020, 1, 1)), created_by="test",
                        **kw)
        self._save(s)
        return s

    def override(self, facility: Facility, user: User, starts_at: datetime, ends_at: datetime,
                 level: str = "on_call_clinician", network: str = "incarcerated",
                 **kw: Any) -> OnCallOverride:
        o = OnCallOverride(facility_id=facility.id, network=network, level=level,
                           user_id=user.id, starts_at=starts_at, ends_at=ends_at,
                           created_by="test", **kw)
        self._save(o)
        return o

    def notification(self, escalation: Escalation, user: User, level: int = 1,
                     **kw: Any) -> EscalationNotification:
        now = datetime.now(UTC)
        n = EscalationNotification(escalation_id=escalation.id,
                                   facility_id=escalation.facility_id,
                                   network=escalation.network, level=level,
                                   level_name=kw.pop("level_name", "on_call_clinician"),
                                   user_id=user.id, reason=kw.pop("reason", "breached"),
                                   notified_at=now, last_paged_at=now, **kw)
        self._save(n)
        return n

    # --- tokens ----------------------------------------------------------------------------
    def token(self, account: User | ApiClient, scopes: list[str] | None = None) -> str:
        if isinstance(account, ApiClient):
            granted = scopes or account.scopes
            kind, role = "client", Role.integration.value
        else:
            granted = scopes or sorted(ROLE_SCOPES[Role(account.role)])
            kind, role = "user", account.role
        token, _jti, _ = self.keyring.issue(
            settings=self.settings, subject=str(account.id), scope=" ".join(granted),
            extra={"sub_kind": kind, "role": role,
                   "facilities": "all" if account.all_facilities else account.facility_ids})
        return token

    def headers(self, account: User | ApiClient, scopes: list[str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token(account, scopes)}"}

    # --- inspection ------------------------------------------------------------------------
    def count(self, model: Any, *where: Any) -> int:
        with Session(self.engine) as s:
            return int(s.execute(select(func.count()).select_from(model).where(*where)).scalar_one())

    def events(self, type_: str | None = None) -> list[OutboxEvent]:
        with Session(self.engine) as s:
            stmt = select(OutboxEvent).order_by(OutboxEvent.id)  # type: ignore[arg-type]
            if type_:
                stmt = stmt.where(OutboxEvent.type == type_)
            return list(s.scalars(stmt))

    def audits(self, action: str | None = None) -> list[AuditEvent]:
        with Session(self.engine) as s:
            stmt = select(AuditEvent).order_by(AuditEvent.id)  # type: ignore[arg-type]
            if action:
                stmt = stmt.where(AuditEvent.action == action)
            return list(s.scalars(stmt))

    def get(self, model: Any, id_: uuid.UUID) -> Any:
        with Session(self.engine, expire_on_commit=False) as s:
            return s.get(model, id_)
