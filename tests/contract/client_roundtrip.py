"""A short integration script written against the client *generated* from openapi/openapi.json
(openapi-python-client), run by tests/test_generated_client.py against a live server.

usage: python client_roundtrip.py BASE_URL USERNAME PASSWORD FACILITY_CODE UNIT_CODE
Prints one JSON line of what it saw; exits non-zero on any surprise.
"""

import json
import sys
import uuid

from peerlink_client import AuthenticatedClient, Client
from peerlink_client.api.auth import issue_token
from peerlink_client.api.escalations import raise_escalation
from peerlink_client.api.imports import import_participants
from peerlink_client.api.participants import list_participants, upsert_participant_by_external_id
from peerlink_client.models import (
    BodyIssueToken,
    BodyIssueTokenGrantType,
    Category,
    EscalationCreate,
    EscalationRead,
    ExternalId,
    Network,
    ParticipantRead,
    ParticipantUpsert,
    ProgramRole,
    Tier,
    TokenResponse,
)
from peerlink_client.types import File


def main(base_url: str, username: str, password: str, facility: str, unit: str) -> dict:
    token = issue_token.sync(client=Client(base_url=base_url), body=BodyIssueToken(
        grant_type=BodyIssueTokenGrantType.PASSWORD, username=username, password=password))
    assert isinstance(token, TokenResponse), token
    api = AuthenticatedClient(base_url=base_url, token=token.access_token)

    upserted = []
    for n in range(3):
        person = upsert_participant_by_external_id.sync(
            "jms", f"BK-{n}", client=api, body=ParticipantUpsert(
                legal_name=f"Person {n}", network=Network.INCARCERATED, facility_code=facility,
                housing_unit_code=unit, program_roles=[ProgramRole.RECIPIENT],
                external_ids=[ExternalId(source="jms", value=f"BK-{n}")]))
        assert isinstance(person, ParticipantRead), person
        upserted.append(str(person.id))
    again = upsert_participant_by_external_id.sync_detailed(
        "jms", "BK-0", client=api, body=ParticipantUpsert(
            legal_name="Person 0", network=Network.INCARCERATED, facility_code=facility,
            housing_unit_code=unit, program_roles=[ProgramRole.RECIPIENT],
            external_ids=[ExternalId(source="jms", value="BK-0")]))
    assert again.status_code == 200, again.status_code

    csv = ("external_source,external_id,network,legal_name,facility_code,housing_unit_code,"
           "custody_status\r\n"
           f"jms,BK-0,incarcerated,Person 0,{facility},{unit},in_custody\r\n"
           f"jms,BK-9,incarcerated,Person 9,{facility},NOPE,in_custody\r\n").encode()
    imported = import_participants.sync(client=api, idempotency_key=str(uuid.uuid4()),
                                        body=File(payload=csv, file_name="bookings.csv"))
    assert (imported.unchanged, imported.failed) == (1, 1), imported  # type: ignore[union-attr]
    assert imported.errors[0].line == 3  # type: ignore[union-attr,index]

    seen, cursor, pages = [], None, 0
    while True:
        page = list_participants.sync(client=api, limit=2, cursor=cursor)
        pages += 1
        seen += [str(p.id) for p in page.items]
        cursor = page.next_cursor if isinstance(page.next_cursor, str) else None
        if not cursor:
            break
    assert sorted(seen) == sorted(upserted), (seen, upserted)

    key = str(uuid.uuid4())
    body = EscalationCreate(participant_id=uuid.UUID(upserted[0]), category=Category("suicide_risk"),
                            description="Seen at the door, distressed", tier=Tier.HIGH)
    first = raise_escalation.sync_detailed(client=api, body=body, idempotency_key=key)
    retry = raise_escalation.sync_detailed(client=api, body=body, idempotency_key=key)
    assert first.status_code == retry.status_code == 201, (first.status_code, retry.status_code)
    assert isinstance(first.parsed, EscalationRead), first.parsed
    assert retry.headers.get("idempotent-replayed") == "true"
    assert retry.parsed.id == first.parsed.id  # type: ignore[union-attr]
    return {"upserted": len(upserted), "listed": len(seen), "pages": pages,
            "escalation": str(first.parsed.id), "tier": str(first.parsed.tier)}


if __name__ == "__main__":
    print(json.dumps(main(*sys.argv[1:6])))
