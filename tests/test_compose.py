"""docker-compose.yml, checked without a Docker engine (CI has none): the production topology
is all there (migrate once, then the API and the workers; PostgreSQL; Redis), in production
mode, with health checks and restart policies, and no secret written in the file: every one
is a required `${VAR:?}` from the documented env file. The environment compose hands the
service, with those references filled in, passes the production start-up checks."""

from __future__ import annotations

import base64
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.config import Settings
from app.security.notes import NoteCipher
from app.security.tokens import KeyRing, generate_private_key_pem

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
# The file without its comments (which may show a reference as an example).
COMPOSE_CODE = "\n".join(line.split(" #")[0] for line in COMPOSE_TEXT.splitlines()
                         if not line.lstrip().startswith("#"))
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
SERVICES: dict[str, Any] = COMPOSE["services"]
APP_SERVICES = ("migrate", "api", "worker")
ENV_EXAMPLE = ROOT / "deploy" / ".env.example"

# What counts as a secret: its value must come from a required reference, never the file.
SECRET_VARS = {"POSTGRES_PASSWORD", "REDIS_PASSWORD", "PEERLINK_NOTE_KEYS", "PEERLINK_NOTE_KEY_ID",
               "PEERLINK_SIGNING_KEY_PATH"}
_SECRETISH = re.compile(r"PASSWORD|SECRET|KEYS?$|TOKEN|_KEY_|DATABASE_URL|STORAGE", re.I)
_REF = re.compile(r"\$\{(\w+)(:?[?-])([^}]*)\}")


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def _command(service: str) -> list[str]:
    command = SERVICES[service]["command"]
    return command.split() if isinstance(command, str) else [str(c) for c in command]


def _interpolate(value: str, values: dict[str, str]) -> str:
    """compose's `${VAR:?msg}` / `${VAR:-default}` / `$$`, enough for this file."""
    def one(m: re.Match[str]) -> str:
        name, op, arg = m.groups()
        if values.get(name):
            return values[name]
        if "?" in op:
            raise KeyError(f"{name}: {arg}")
        return arg
    return _REF.sub(one, value).replace("$$", "$")


def test_the_topology_is_all_there():
    assert set(SERVICES) >= {"db", "redis", "migrate", "api", "worker"}
    assert _command("migrate") == ["peerlink", "db", "upgrade"]
    assert _command("worker") == ["peerlink", "worker"]
    api = _command("api")
    assert api[:2] == ["peerlink", "serve"]
    # Migrations never run at API start (replicas would race); N processes.
    assert "--no-migrate" in api and "--workers" in api
    for name in APP_SERVICES:
        assert SERVICES[name].get("build") or SERVICES[name].get("image")
    assert int(str(_interpolate(str(SERVICES["worker"]["deploy"]["replicas"]), {}))) >= 1


@pytest.mark.parametrize("service", ["api", "worker"])
def test_the_api_and_the_workers_wait_for_migrations_to_succeed(service):
    depends = SERVICES[service]["depends_on"]
    assert depends["migrate"]["condition"] == "service_completed_successfully"
    assert SERVICES["migrate"]["depends_on"]["db"]["condition"] == "service_healthy"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_production_mode_with_its_keys(service):
    env = _env(service)
    assert env["PEERLINK_MODE"] == "production"
    assert env["PEERLINK_JWT_PRIVATE_KEY_FILE"].startswith("/run/secrets/")
    assert "signing_key" in SERVICES[service]["secrets"]
    for name in ("PEERLINK_NOTE_KEYS", "PEERLINK_NOTE_KEY_ID", "PEERLINK_DATABASE_URL"):
        assert name in env
    assert env["PEERLINK_DATABASE_URL"].split("@", 1)[1].startswith("db:5432/")
    assert re.fullmatch(r"redis://:\$\{REDIS_PASSWORD:\?[^}]*\}@redis:6379/\d+",
                        env["PEERLINK_RATE_LIMIT_STORAGE"])
    # Shared counters under the deployment's prefix (app/counters.py).
    assert env["PEERLINK_RATE_LIMIT_PREFIX"] == "${PEERLINK_DEPLOYMENT:-peerlink}"


def test_the_image_has_the_redis_client_the_counters_need():
    """The API's counters are in Redis: the image installs requirements.lock, which must hold
    the `redis` extra's client (coredis below 6, the major version `limits` works with)."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "requirements.lock" in dockerfile
    lock = (ROOT / "requirements.lock").read_text()
    pinned = re.search(r"^coredis==(\d+)\.", lock, re.M)
    assert pinned is not None and int(pinned.group(1)) < 6
    assert "redis = [" in (ROOT / "pyproject.toml").read_text()


def test_no_secret_is_written_in_the_file():
    for name in SERVICES:
        for key, value in _env(name).items():
            if not _SECRETISH.search(key) or key in ("PEERLINK_JWT_PRIVATE_KEY_FILE",):
                continue
            refs = _REF.findall(value)
            assert refs, f"{name}.{key} is written in the file"
            # Credentials inside a URL come from a reference too.
            creds = re.match(r"\w+://([^@/]*)@", value)
            if creds:
                assert _REF.fullmatch(creds.group(1).split(":", 1)[-1]), f"{name}.{key}"
    # Every use of a secret variable is required (`:?`: unset or empty refuses to start).
    for name, op, _ in _REF.findall(COMPOSE_CODE):
        if name in SECRET_VARS:
            assert op == ":?", f"${{{name}{op}...}} must be required"
    assert "BEGIN" not in COMPOSE_TEXT and "PRIVATE KEY" not in COMPOSE_TEXT
    secret_file = COMPOSE["secrets"]["signing_key"]["file"]
    assert _REF.fullmatch(secret_file) and _REF.fullmatch(secret_file).group(2) == ":?"


def test_the_env_file_documents_every_variable_and_holds_no_secret():
    text = ENV_EXAMPLE.read_text()
    assigned = dict(re.findall(r"^(\w+)=(.*)$", text, re.M))
    used = {name for name, _, _ in _REF.findall(COMPOSE_CODE)}
    assert used - set(assigned) == set()
    for name in SECRET_VARS - {"PEERLINK_NOTE_KEY_ID", "PEERLINK_SIGNING_KEY_PATH"}:
        assert assigned[name] == "", f"{name} must be empty in the example"
    assert ".env" in (ROOT / ".gitignore").read_text()


def test_health_checks_and_restart_policies():
    def check(service: str) -> str:
        test = SERVICES[service]["healthcheck"]["test"]
        return " ".join(test) if isinstance(test, list) else test

    assert "pg_isready" in check("db")
    assert "redis-cli" in check("redis") and "ping" in check("redis")
    assert "/readyz" in check("api")
    for name in ("db", "redis", "api", "worker"):
        assert SERVICES[name]["restart"] in ("always", "unless-stopped", "on-failure")
    assert SERVICES["migrate"]["restart"] == "no"  # a one-shot


def test_the_api_processes_share_a_metrics_directory():
    directory = _env("api")["PROMETHEUS_MULTIPROC_DIR"]
    mounts = [str(m).split(":", 1)[0] for m in SERVICES["api"].get("tmpfs", [])] + \
        [str(v).split(":")[1] for v in SERVICES["api"].get("volumes", [])]
    assert directory in mounts


def test_the_environment_compose_gives_passes_the_production_checks(tmp_path, monkeypatch):
    """The committed file used not to start: production mode needs note keys it did not set."""
    key_file = tmp_path / "signing-key.pem"
    key_file.write_text(generate_private_key_pem())
    values = {"POSTGRES_PASSWORD": "pw", "REDIS_PASSWORD": "pw",
              "PEERLINK_NOTE_KEYS": json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()}),
              "PEERLINK_NOTE_KEY_ID": "k1", "PEERLINK_SIGNING_KEY_PATH": str(key_file)}
    for key in list(os.environ):
        if key.startswith("PEERLINK_"):
            monkeypatch.delenv(key)
    for service in APP_SERVICES:
        env = {k: _interpolate(v, values) for k, v in _env(service).items()}
        env["PEERLINK_JWT_PRIVATE_KEY_FILE"] = str(key_file)  # where the secret is mounted
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        settings = Settings(_env_file=None)
        assert settings.mode == "production" and not settings.is_sqlite
        NoteCipher.from_settings(settings)
        KeyRing.from_settings(settings)
    # Without the env file's secrets, compose refuses (the `:?` references).
    with pytest.raises(KeyError, match="PEERLINK_NOTE_KEYS"):
        _interpolate(_env("api")["PEERLINK_NOTE_KEYS"], {})
