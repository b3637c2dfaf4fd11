"""Proof that the committed contract serves other vendors: a Python client generated from
openapi/openapi.json (openapi-python-client) runs a short integration script against a live
server, and TypeScript types are generated from it (openapi-typescript, npm)."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from app.models.common import Role
from tests.factories import PASSWORD

ROOT = Path(__file__).resolve().parents[1]
CONTRACT = ROOT / "openapi" / "openapi.json"
BIN = Path(sys.executable).parent


def _generate_python_client(out: Path) -> None:
    env = os.environ | {"PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    r = subprocess.run([str(BIN / "openapi-python-client"), "generate", "--path", str(CONTRACT),
                        "--output-path", str(out / "peerlink_client"), "--meta", "none",
                        "--config", str(ROOT / "tests" / "contract" / "openapi-python-client.yaml")],
                       capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    # A warning means part of the contract could not be turned into code. The one known gap:
    # the generator has no JSON-lines body, so imports are generated for their CSV form only.
    problems = [line for line in (r.stdout + r.stderr).splitlines()
                if line.startswith(("WARNING", "Unsupported", "Unable"))]
    known = {"WARNING parsing POST /v1/imports/participants within imports.",
             "WARNING parsing POST /v1/imports/keep-apart-orders within imports.",
             "Unsupported content type application/x-ndjson"}
    assert set(problems) <= known, r.stdout + r.stderr


def test_generated_python_client_round_trip(tmp_path, live_server, factory):
    f = factory.facility("CCJ")
    factory.unit(f, "A1")
    coord = factory.user(Role.coordinator, [f])
    _generate_python_client(tmp_path)
    r = subprocess.run(
        [sys.executable, str(ROOT / "tests" / "contract" / "client_roundtrip.py"), live_server,
         coord.username, PASSWORD, "CCJ", "A1"],
        capture_output=True, text=True, timeout=120,
        env=os.environ | {"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stdout + r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    assert seen["upserted"] == seen["listed"] == 3 and seen["pages"] == 2
    assert seen["tier"] == "high"


def _openapi_typescript() -> Path | None:
    tool = ROOT / "contract" / "node_modules" / ".bin" / "openapi-typescript"
    if tool.exists():
        return tool
    if os.environ.get("CI") == "true":
        pytest.fail("contract tools are missing under CI=true: run `make contract-tools`")
    return None


def test_typescript_types_generate_from_the_contract(tmp_path):
    tool = _openapi_typescript()
    if tool is None or shutil.which("node") is None:
        pytest.skip("Node.js contract tools not installed (`make contract-tools`)")
    out = tmp_path / "peerlink.d.ts"
    r = subprocess.run([str(tool), str(CONTRACT), "--output", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    types = out.read_text()
    for expected in ('"/v1/participants/by-external-id/{source}/{value}"', "raise_escalation",
                     "ParticipantRead", '"Idempotency-Key"'):
        assert expected in types, expected
    tsc = ROOT / "contract" / "node_modules" / ".bin" / "tsc"
    if tsc.exists():  # the generated file must also type-check
        r = subprocess.run([str(tsc), "--noEmit", "--strict", str(out)], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr


def test_breaking_change_check_fails_unless_announced(tmp_path):
    if not (ROOT / "contract" / "node_modules" / "api-smart-diff").exists():
        if os.environ.get("CI") == "true":
            pytest.fail("contract tools are missing under CI=true: run `make contract-tools`")
        pytest.skip("Node.js contract tools not installed (`make contract-tools`)")
    before = json.loads(CONTRACT.read_text())
    after = json.loads(CONTRACT.read_text())
    del after["paths"]["/v1/participants/{participant_id}"]["get"]
    after["info"]["version"] = "9.0.0"
    (tmp_path / "before.json").write_text(json.dumps(before))
    (tmp_path / "after.json").write_text(json.dumps(after))
    additive = json.loads(CONTRACT.read_text())
    additive["components"]["schemas"]["ParticipantRead"]["properties"]["x"] = {"type": "string"}
    (tmp_path / "additive.json").write_text(json.dumps(additive))

    def check(after_file: str, changelog: str) -> subprocess.CompletedProcess[str]:
        (tmp_path / "CHANGELOG.md").write_text(changelog)
        return subprocess.run(["node", str(ROOT / "contract" / "breaking.mjs"),
                               str(tmp_path / "before.json"), str(tmp_path / after_file),
                               str(tmp_path / "CHANGELOG.md")],
                              capture_output=True, text=True, timeout=60)

    unannounced = check("after.json", "## 9.0.0 — additive\n")
    assert unannounced.returncode == 1
    assert "GET /v1/participants/{participant_id}" in unannounced.stdout
    assert check("after.json", "## 9.0.0 — 2026-11-28 (breaking)\n").returncode == 0
    assert check("additive.json", "").returncode == 0  # a new response field breaks nothing
