"""Scale-out proof on PostgreSQL (bench/scaleout.py; `make bench` runs it for 60 s and prints
its figures): migrate, 2 API processes and 2 workers under a bounded mixed load, here 15 s;
one worker is SIGKILLed halfway and restarted. Every escalation past its deadline is breached
exactly once within 10 s of it; every subscribed event reaches the webhook receiver at least
once, in order per record; every idempotent POST (sent to one process, replayed to the other)
takes effect once; `peerlink audit verify` passes. The rate-limit counters are in Redis (as
compose runs them): unreachable, the test skips, or fails under CI=true."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scaleout import run
from tests.conftest import IS_PG, _create_pg_database, _drop_pg_database
from tests.test_topology import redis_url

pytestmark = pytest.mark.skipif(
    not IS_PG, reason="the multi-process topology needs PostgreSQL (TEST_DATABASE_URL)")


@pytest.fixture()
def fresh_db() -> Iterator[str]:
    url = _create_pg_database()
    yield url
    _drop_pg_database(url)


def test_two_apis_and_two_workers_keep_every_promise_through_a_killed_worker(
        fresh_db: str, tmp_path: Path):
    report = run(fresh_db, tmp_path, duration=15, clients=3, rate=6, redis_url=redis_url())
    report.print()
    assert not report.failures, report.logs[-6000:]
    f = report.figures
    # The load did exercise each promise.
    assert f["escalations_due"] >= 3 and f["breaches"] == f["escalations_due"]
    assert f["idempotent_posts"] >= 10 and f["idempotent_once"]
    assert f["webhook_events"] >= 20 and f["webhook_in_order"]
    assert f["breach_lag_max_s"] <= 10
    assert "intact" in f["audit"]
