"""The production topology of docker-compose.yml, as plain processes (CI has no Docker
engine): on a fresh PostgreSQL database, migrate once (`peerlink db upgrade`), then 2 API
processes (`peerlink serve --no-migrate`, as the `api` service runs) and 2 workers
(`peerlink worker`), all in production mode with their keys from the environment. Both APIs
are ready, a token one issues works on the other, and the workers keep the crisis clock: an
escalation past its deadline is breached, once. The rate-limit and sign-in counters live in
Redis (127.0.0.1:6379, or TEST_REDIS_URL) under a deployment prefix: the 2 processes give a
caller one budget, not one each. Everything is stopped at the end.

Redis unreachable: skipped on a workstation, failed under CI=true (CI runs a Redis).

PostgreSQL only: on the embedded SQLite the worker runs inside the one service process."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from app.config import Settings
from app.models import Escalation
from app.models.common import Role
from app.security.tokens import KeyRing
from tests.conftest import IS_PG, TEST_KEY, _create_pg_database, _drop_pg_database
from tests.factories import PASSWORD, Factory

pytestmark = pytest.mark.skipif(
    not IS_PG, reason="the multi-process topology needs PostgreSQL (TEST_DATABASE_URL); on "
                      "SQLite the worker is embedded in the one service process")

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 180  # 4 Python processes starting on a busy 2-core machine (seen: 88 s)


REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_url() -> str:
    """The test Redis, reachable; or a loud failure under CI, a skip elsewhere."""
    target = httpx.URL(REDIS_URL.replace("redis://", "http://", 1))
    try:
        with socket.create_connection((target.host, target.port or 6379), timeout=2) as s:
            s.sendall(b"PING\r\n")
            answer = s.recv(64)
    except OSError as exc:
        answer = repr(exc).encode()
    if not answer.startswith((b"+PONG", b"-NOAUTH")):
        message = f"Redis at {REDIS_URL} is not reachable ({answer!r})"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(message + ": CI must run a Redis for the shared rate-limit counters")
        pytest.skip(message)
    return REDIS_URL


def redis_keys(pattern: str) -> list[str]:
    import asyncio

    import coredis

    async def scan() -> list[str]:
        client = coredis.Redis.from_url(REDIS_URL, decode_responses=True)
        return sorted([key async for key in client.scan_iter(match=pattern)])
    return asyncio.run(scan())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Topology:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir, self.env = workdir, env
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=self.workdir,
                              env=self.env, capture_output=True, text=True, timeout=timeout,
                              check=False)

    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = open(self.workdir / f"{name}.log", "wb")  # noqa: SIM115 (closed with the process)
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], cwd=self.workdir,
                                env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.procs.append((name, proc))
        return proc

    def logs(self) -> str:
        return "\n".join(f"--- {name} ---\n{(self.workdir / f'{name}.log').read_text()[-3000:]}"
                         for name, _ in self.procs)

    def alive(self) -> list[str]:
        return [name for name, p in self.procs if p.poll() is None]

    def stop(self) -> None:
        for _, p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 20
        for _, p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=5)


@pytest.fixture()
def fresh_db() -> Iterator[str]:
    url = _create_pg_database()
    yield url
    _drop_pg_database(url)


@pytest.fixture()
def topology(fresh_db: str, tmp_path: Path) -> Iterator[Topology]:
    key_file = tmp_path / "signing-key.pem"
    key_file.write_text(TEST_KEY)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PEERLINK_", "PROMETHEUS_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "PEERLINK_MODE": "production",
        "PEERLINK_DATABASE_URL": fresh_db,
        "PEERLINK_JWT_PRIVATE_KEY_FILE": str(key_file),
        "PEERLINK_NOTE_KEYS": json.dumps({"k1": base64.b64encode(os.urandom(32)).decode()}),
        "PEERLINK_NOTE_KEY_ID": "k1",
        # Shared counters, as compose runs them; this run's own prefix (a deployment's name).
        "PEERLINK_RATE_LIMIT_STORAGE": redis_url(),
        "PEERLINK_RATE_LIMIT_PREFIX": f"topology-{os.urandom(4).hex()}",
        "PEERLINK_RATE_LIMIT_PER_CALLER": "30/minute",
        # Production turns the password grant off (people sign in through the browser session);
        # this deployment turns it on for its scripts, as the setting allows, to sign in below.
        "PEERLINK_PASSWORD_GRANT_ENABLED": "true",
        "PEERLINK_ESCALATION_SWEEP_SECONDS": "1",
        "PEERLINK_LOG_LEVEL": "WARNING",
    })
    top = Topology(tmp_path, env)
    try:
        yield top
    finally:
        top.stop()


def _wait_ready(urls: list[str], top: Topology) -> None:
    deadline = time.monotonic() + START_SECONDS
    pending = set(urls)
    while pending:
        for url in sorted(pending):
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    pending.discard(url)
            except httpx.HTTPError:
                pass
        if len(top.alive()) < len(top.procs):
            pytest.fail(f"a process exited while starting\n{top.logs()}")
        if pending and time.monotonic() > deadline:
            pytest.fail(f"not ready in {START_SECONDS} s: {sorted(pending)}\n{top.logs()}")
        time.sleep(0.3)


def test_migrate_then_two_apis_and_two_workers(topology: Topology, fresh_db: str):
    started = time.monotonic()
    migrated = topology.run("db", "upgrade", timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    assert "latest migration" in migrated.stdout

    ports = [_free_port(), _free_port()]
    for n, port in enumerate(ports):
        topology.start(f"api{n}", "serve", "--no-migrate", "--port", str(port))
    for n in range(2):
        topology.start(f"worker{n}", "worker")
    apis = [f"http://127.0.0.1:{port}" for port in ports]
    _wait_ready(apis, topology)
    print(f"migrated and ready in {time.monotonic() - started:.1f} s")

    # Seed through the database (as an admin's CLI would): a facility, a coordinator, a person.
    seed = Settings(_env_file=None, database_url=fresh_db, jwt_private_key=TEST_KEY)
    factory = Factory(seed, KeyRing.from_settings(seed))
    try:
        f = factory.facility("CCJ")
        coordinator = factory.user(Role.coordinator, [f])
        person = factory.recipient(f)

        # A token issued by one API process works on the other.
        r = httpx.post(f"{apis[0]}/v1/auth/token", timeout=30, data={
            "grant_type": "password", "username": coordinator.username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
        for api in apis:
            me = httpx.get(f"{api}/v1/auth/me", headers=bearer, timeout=10)
            assert me.status_code == 200 and me.json()["username"] == coordinator.username
            assert httpx.get(f"{api}/v1/facilities", headers=bearer, timeout=10).status_code == 200

        # The workers keep the crisis clock: past its deadline, an escalation is breached once.
        # Someone on call at every level of the default chain, so the breach climbs one level
        # (an unstaffed level would move it on at once: tests/test_paging.py).
        for level, role in (("on_call_clinician", Role.clinician),
                            ("duty_supervisor", Role.officer),
                            ("facility_commander", Role.coordinator)):
            factory.shift(f, factory.user(role, [f]), level)
        esc = factory.escalation(person, tier="imminent")
        with Session(factory.engine) as s, s.begin():
            s.execute(update(Escalation).where(Escalation.id == esc.id).values(
                ack_deadline=datetime.now(UTC) - timedelta(seconds=1)))
        deadline = time.monotonic() + 120  # a loaded machine starts Python slowly
        while not factory.events("escalation.breached"):
            assert time.monotonic() < deadline, f"no breach in 30 s\n{topology.logs()}"
            time.sleep(0.25)
        time.sleep(3)  # a second worker's rounds come and go: still one breach
        assert len(factory.events("escalation.breached")) == 1
        with Session(factory.engine) as s:
            breached = s.get(Escalation, esc.id)
            assert breached is not None and breached.breached
            assert breached.chain_level == esc.chain_level + 1
        assert sorted(topology.alive()) == ["api0", "api1", "worker0", "worker1"], \
            topology.logs()

        # One budget across both processes, counted in Redis: a caller allowed 30 requests a
        # minute, alternating between the 2 API processes, gets 30 answers, not 60.
        caller = factory.user(Role.officer, [f])
        r = httpx.post(f"{apis[1]}/v1/auth/token", timeout=30, data={
            "grant_type": "password", "username": caller.username, "password": PASSWORD})
        assert r.status_code == 200, r.text
        bearer = {"Authorization": f"Bearer {r.json()['access_token']}"}
        codes = [httpx.get(f"{apis[n % 2]}/v1/facilities", headers=bearer, timeout=10)
                 .status_code for n in range(45)]
        assert codes.count(200) == 30 and codes.count(429) == 15, codes
        assert codes[:30] == [200] * 30

        # The sign-in throttle too: 5 failed guesses a minute per username, across both.
        target = factory.user(Role.coordinator, [f])
        codes = [httpx.post(f"{apis[n % 2]}/v1/auth/token", timeout=30, data={
            "grant_type": "password", "username": target.username, "password": "wrong"})
            .status_code for n in range(8)]
        assert codes == [400] * 5 + [429] * 3, codes

        # Under the deployment's prefix.
        prefix = topology.env["PEERLINK_RATE_LIMIT_PREFIX"]
        keys = redis_keys(f"{prefix}:*")
        assert any(caller.id.hex in k or str(caller.id) in k for k in keys), keys
        assert any(target.username in k for k in keys), keys
    finally:
        factory.close()

    topology.stop()
    assert topology.alive() == []
