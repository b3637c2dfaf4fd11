"""A jail management system (JMS) sync against peerlink, in one short file.

    python examples/jms_sync.py pull                 # changes since the last run (updated_since)
    python examples/jms_sync.py push BK-1001 --name "Sam Roe" --facility CCJ --unit A1 \\
                                     --status released   # a booking's state, upserted by its id
    python examples/jms_sync.py listen --port 8787   # register a webhook, verify what arrives

Settings come from the environment: PEERLINK_URL (default http://127.0.0.1:8000), and the
API client's PEERLINK_CLIENT_ID / PEERLINK_CLIENT_SECRET (`peerlink clients create`, or the
integration client `make demo` prints). Needs httpx and standardwebhooks (both installed with
peerlink). Everything here is ordinary HTTP; see README "Integrating a jail management system".
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import httpx
from standardwebhooks import Webhook, WebhookVerificationError

BASE = os.environ.get("PEERLINK_URL", "http://127.0.0.1:8000")
CHECKPOINT = Path(os.environ.get("JMS_SYNC_CHECKPOINT", "var/jms_sync_checkpoint.json"))


def api() -> httpx.Client:
    """An HTTP client holding a fresh access token (client_credentials, HTTP Basic)."""
    auth = (os.environ["PEERLINK_CLIENT_ID"], os.environ["PEERLINK_CLIENT_SECRET"])
    r = httpx.post(f"{BASE}/v1/auth/token", data={"grant_type": "client_credentials"},
                   auth=auth, timeout=10)
    r.raise_for_status()
    token = r.json()["access_token"]
    return httpx.Client(base_url=BASE, timeout=30,
                        headers={"Authorization": f"Bearer {token}"})


def pull(client: httpx.Client) -> dict[str, Any]:
    """Every participant changed since the last run, page by page (keyset cursors)."""
    state = json.loads(CHECKPOINT.read_text()) if CHECKPOINT.exists() else {}
    started = datetime.now(UTC).isoformat()
    params: dict[str, Any] = {"limit": 200}
    if state.get("updated_since"):
        params["updated_since"] = state["updated_since"]
    changed = 0
    while True:
        r = client.get("/v1/participants", params=params)
        r.raise_for_status()
        page = r.json()
        changed += len(page["items"])  # a real sync writes these into the JMS here
        if not page["next_cursor"]:
            break
        params["cursor"] = page["next_cursor"]
    CHECKPOINT.parent.mkdir(parents=True, exist_ok=True)
    CHECKPOINT.write_text(json.dumps({"updated_since": started}))
    return {"changed": changed, "since": state.get("updated_since")}


def push(client: httpx.Client, booking: str, *, name: str, facility: str, unit: str | None,
         status: str) -> dict[str, Any]:
    """Upsert one booking by the JMS's own id: the same call twice changes nothing; a release
    ends the person's pairings and cancels their scheduled sessions in peerlink."""
    body = {"network": "incarcerated", "legal_name": name, "facility_code": facility,
            "custody_status": status, "program_roles": ["recipient"]}
    if unit and status == "in_custody":
        body["housing_unit_code"] = unit
    r = client.put(f"/v1/participants/by-external-id/jms/{booking}", json=body)
    if r.status_code >= 400:  # problem+json: a stable code and field errors
        raise SystemExit(f"{r.status_code} {r.json().get('code')}: {r.json().get('detail')}")
    return {"status": r.status_code, "id": r.json()["id"],
            "custody_status": r.json()["custody_status"]}


def verify(secret: str, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
    """Standard Webhooks verification: signature, and a timestamp within five minutes."""
    return Webhook(secret).verify(body, headers)  # type: ignore[no-any-return]


def listen(client: httpx.Client, port: int, once: bool = False) -> None:
    """Registers a webhook endpoint for this client and prints every verified event."""
    r = client.post("/v1/webhook-endpoints", headers={"Idempotency-Key": str(uuid.uuid4())},
                    json={"url": f"http://127.0.0.1:{port}/peerlink",
                          "event_types": ["participant.updated", "participant.released",
                                          "pairing.ended"],
                          "description": "JMS sync example"})
    r.raise_for_status()
    secret = r.json()["secret"]  # shown once: a real integration stores it in its vault
    print(f"endpoint {r.json()['id']} registered; waiting on port {port}", flush=True)

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                event = verify(secret, body, dict(self.headers.items()))
            except WebhookVerificationError:
                self.send_response(400)  # not from peerlink: drop it
                self.end_headers()
                return
            self.send_response(204)  # acknowledge first; fetch details with our own token
            self.end_headers()
            print(json.dumps({"type": event["type"], "id": event["id"],
                              "url": event.get("url")}), flush=True)

        def log_message(self, *_: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", port), Receiver)
    if once:
        server.handle_request()
    else:
        server.serve_forever()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("pull")
    p = sub.add_parser("push")
    p.add_argument("booking")
    p.add_argument("--name", required=True)
    p.add_argument("--facility", required=True)
    p.add_argument("--unit")
    p.add_argument("--status", choices=["in_custody", "transferred", "released"],
                   default="in_custody")
    s = sub.add_parser("listen")
    s.add_argument("--port", type=int, default=8787)
    s.add_argument("--once", action="store_true", help="stop after the first delivery")
    args = parser.parse_args(argv)
    with api() as client:
        if args.command == "pull":
            print(json.dumps(pull(client)))
        elif args.command == "push":
            print(json.dumps(push(client, args.booking, name=args.name, facility=args.facility,
                                  unit=args.unit, status=args.status)))
        else:
            listen(client, args.port, once=args.once)


if __name__ == "__main__":
    main(sys.argv[1:])
