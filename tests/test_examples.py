"""examples/jms_sync.py runs as documented against a live server: push a booking (twice: the
second changes nothing), release it (its pairing ends), pull changes since the last run, and
receive a webhook verified with the Standard Webhooks library."""

import json
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from app.models import Pairing, Participant
from tests.factories import PASSWORD
from tests.test_webhooks import run_round

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "examples" / "jms_sync.py"


def _env(live_server: str, api, tmp_path: Path) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return os.environ | {"PEERLINK_URL": live_server, "PEERLINK_CLIENT_ID": api.client_id,
                         "PEERLINK_CLIENT_SECRET": PASSWORD,
                         "JMS_SYNC_CHECKPOINT": str(tmp_path / "checkpoint.json")}


def _run(env: dict[str, str], *args: str) -> dict:
    r = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                       env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def test_push_release_and_pull(live_server, factory, tmp_path):
    f = factory.facility("CCJ")
    factory.unit(f, "A1")
    api = factory.api_client(["participants:read", "participants:write", "facilities:read"])
    env = _env(live_server, api, tmp_path)

    first = _run(env, "push", "BK-1001", "--name", "Sam Roe", "--facility", "CCJ",
                 "--unit", "A1")
    assert first["status"] == 201 and first["custody_status"] == "in_custody"
    again = _run(env, "push", "BK-1001", "--name", "Sam Roe", "--facility", "CCJ",
                 "--unit", "A1")
    assert again == first | {"status": 200}
    assert len(factory.events("participant.created")) == 1
    assert not factory.events("participant.updated")

    person = factory.get(Participant, uuid.UUID(first["id"]))
    pairing = factory.pairing(factory.certified_supporter(f), person)
    released = _run(env, "push", "BK-1001", "--name", "Sam Roe", "--facility", "CCJ",
                    "--status", "released")
    assert released["custody_status"] == "released"
    assert factory.get(Pairing, pairing.id).status == "ended"  # the release cascaded

    assert _run(env, "pull")["changed"] >= 2  # everyone, on the first run
    assert _run(env, "pull")["changed"] == 0  # nothing since


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_listen_receives_a_verified_webhook(live_server, factory, settings, tmp_path):
    f = factory.facility("CCJ")
    factory.unit(f, "A1")
    api = factory.api_client(["participants:read", "participants:write", "facilities:read",
                              "webhooks:read", "webhooks:write", "pairings:read"])
    env = _env(live_server, api, tmp_path)
    port = _free_port()
    listener = subprocess.Popen([sys.executable, str(SCRIPT), "listen", "--port", str(port),
                                 "--once"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env)
    try:
        ready, _, _ = select.select([listener.stdout], [], [], 30)
        assert ready, "the listener did not start"
        assert "registered" in listener.stdout.readline()  # type: ignore[union-attr]
        _run(env, "push", "BK-7", "--name", "Ana Diaz", "--facility", "CCJ", "--unit", "A1")
        _run(env, "push", "BK-7", "--name", "Ana Diaz", "--facility", "CCJ",
             "--status", "released")
        deadline = time.monotonic() + 120  # a loaded machine starts Python slowly
        while listener.poll() is None and time.monotonic() < deadline:
            run_round(settings)  # the worker's delivery round, as `peerlink worker` runs it
            time.sleep(0.2)
        out, err = listener.communicate(timeout=10)
    finally:
        listener.kill()
    assert listener.returncode == 0, err
    event = json.loads(out.strip().splitlines()[-1])
    assert event["type"] in ("participant.updated", "participant.released")
    assert event["url"].startswith("/v1/participants/") or "/v1/participants/" in event["url"]
