"""Worker liveness (issue 12, item 3): each job's last successful round is recorded in
`worker_job`; /readyz shows the ages and turns unready when the breach sweep is stale (or never
ran after a grace); /metrics carries the database's figures, sums processes in multiprocess
mode; `peerlink worker --metrics-port` serves the worker's own."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import timedelta

from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text, update
from sqlalchemy.orm import Session

from app.config import Settings
from app.db import make_async_engine, make_sessionmaker, utcnow
from app.main import create_app
from app.models import WorkerJob
from app.models.import_job import ImportJob
from app.worker import Job, _every, _jobs, run_job


def _round(settings: Settings, name: str = "escalation_breach_sweep") -> None:
    job = next(j for j in _jobs() if j.name == name)

    async def go() -> None:
        engine = make_async_engine(settings)
        try:
            assert await run_job(make_sessionmaker(engine), settings, job) is not None
        finally:
            await engine.dispose()

    asyncio.run(go())


def _row(settings: Settings, name: str):  # type: ignore[no-untyped-def]
    engine = create_engine(settings.sync_database_url)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT rounds, last_success_at, last_error_at FROM worker_job "
                                "WHERE name = :n"), {"n": name}).first()
    engine.dispose()
    return row


def test_fresh_database_is_ready_for_a_grace_then_unready_until_the_sweep_runs(settings):
    settings = settings.model_copy(update={"ready_max_sweep_age_seconds": 0.5})
    with TestClient(create_app(settings)) as client:
        r = client.get("/readyz")
        assert r.status_code == 200 and r.json() == {"status": "ok", "jobs": {}}
        time.sleep(0.7)
        r = client.get("/readyz")
        assert r.status_code == 503
        assert r.json() == {"status": "unavailable", "worker": "never ran", "jobs": {}}
        _round(settings)
        r = client.get("/readyz")
        assert r.status_code == 200, r.json()
        assert 0 <= r.json()["jobs"]["escalation_breach_sweep"] < 0.5


def test_each_round_is_recorded_and_a_stale_sweep_is_unready(settings, client):
    _round(settings)
    _round(settings)
    _round(settings, "escalation_watch_sweep")
    assert _row(settings, "escalation_breach_sweep")[0] == 2
    body = client.get("/readyz").json()
    assert body["status"] == "ok"
    assert set(body["jobs"]) == {"escalation_breach_sweep", "escalation_watch_sweep"}
    assert all(isinstance(age, float) and age < 30 for age in body["jobs"].values())

    engine = create_engine(settings.sync_database_url)
    with engine.begin() as conn:  # the worker died two minutes ago
        conn.execute(update(WorkerJob).values(last_success_at=utcnow() - timedelta(seconds=120)))
    engine.dispose()
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.json()["worker"] == "stale" and r.json()["jobs"]["escalation_breach_sweep"] >= 120


def test_a_failed_round_stamps_its_error_not_a_success(settings):
    async def boom(session, settings):  # type: ignore[no-untyped-def]
        raise RuntimeError("receiver down")

    async def go() -> None:
        engine = make_async_engine(settings)
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.2, stop.set)
        try:
            await _every(make_sessionmaker(engine), settings, Job("boom", boom, lambda s: 60), stop)
        finally:
            await engine.dispose()

    asyncio.run(go())
    rounds, success, error = _row(settings, "boom")
    assert rounds == 0 and success is None and error is not None


def test_metrics_carry_the_database_figures(settings, client, factory):
    _round(settings)
    text_ = client.get("/metrics").text
    line = next(x for x in text_.splitlines() if x.startswith(
        'peerlink_job_last_success_timestamp_seconds{job="escalation_breach_sweep"}'))
    assert abs(float(line.split()[-1]) - time.time()) < 30
    assert "peerlink_webhook_deliveries_pending 0.0" in text_
    assert "peerlink_webhook_oldest_pending_age_seconds 0.0" in text_
    assert "peerlink_import_jobs_open 0.0" in text_

    with Session(factory.engine) as session:  # a large import waiting for the runner
        session.add(ImportJob(kind="participants", format="csv", created_by="u"))
        session.commit()
    assert "peerlink_import_jobs_open 1.0" in client.get("/metrics").text


def test_api_metrics_add_up_across_processes(client, tmp_path, monkeypatch):
    """Two processes count requests into one PROMETHEUS_MULTIPROC_DIR; one scrape sums them."""
    shared = tmp_path / "metrics"  # (tmp_path holds the SQLite test database, also a *.db)
    shared.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(shared)}
    code = ("from app.middleware import REQUESTS; "
            "REQUESTS.labels('GET', '/v1/summed', '200').inc()")
    for _ in range(2):
        subprocess.run([sys.executable, "-c", code], env=env, check=True)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(shared))
    text_ = client.get("/metrics").text
    assert ('http_requests_total{method="GET",route="/v1/summed",status="200"} 2.0'
            in text_), text_[:2000]
    assert "peerlink_import_jobs_open 0.0" in text_  # the database's figures, once


def test_worker_serves_its_own_metrics(settings, db_url):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING",
           "PEERLINK_ESCALATION_SWEEP_SECONDS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--metrics-port",
                             str(port)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    want = 'peerlink_worker_rounds_total{job="escalation_breach_sweep",outcome="ok"}'
    try:
        deadline = time.monotonic() + 60
        body = ""
        while want not in body:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, body[-2000:]
            time.sleep(0.2)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
                    body = r.read().decode()
            except OSError:
                continue
        assert _row(settings, "escalation_breach_sweep")[0] >= 1
    finally:
        proc.terminate()
        proc.wait(timeout=30)
