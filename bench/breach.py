"""The breach check: how long after its deadline the real worker (`peerlink worker`, its default
sweep interval) marks an open escalation breached. `bench/run.py` runs it after the load when
escalation_dashboard runs (BENCH_BREACH)."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out"
PY = sys.executable
BREACH_TARGET_S = 10.0  # the issue: "a breach is detected within 10 s of its deadline"


def breach_check(url: str, seeded: Any, env: dict[str, str], lead_s: float = 3.0,
                 timeout_s: float = 30.0) -> dict[str, Any]:
    """Starts `peerlink worker` (default sweep interval), inserts one open escalation due in
    `lead_s` seconds, and polls every 100 ms until the worker marks it breached: the delay
    between its deadline and the detection (the issue: < 10 s)."""
    import psycopg

    from app.db import utcnow, uuid7
    from bench.seed import _conninfo

    wenv = {k: v for k, v in env.items() if not k.startswith("PEERLINK_")}
    wenv.update(PEERLINK_DATABASE_URL=_conninfo(url), PEERLINK_LOG_LEVEL="WARNING")
    log = open(OUT / "worker.log", "w")  # noqa: SIM115
    worker = subprocess.Popen([str(Path(PY).parent / "peerlink"), "worker"], cwd=ROOT, env=wenv,
                              stdout=log, stderr=subprocess.STDOUT)
    out: dict[str, Any] = {"lead_s": lead_s, "target_s": BREACH_TARGET_S}
    try:
        with psycopg.connect(_conninfo(url), autocommit=True) as conn:
            time.sleep(1.0)  # let the worker start (its first sweep runs at once)
            if worker.poll() is not None:
                raise RuntimeError(f"worker exited ({worker.returncode}); see {log.name}")
            now = utcnow()
            eid, deadline = uuid7(), now + timedelta(seconds=lead_s)
            conn.execute(
                "INSERT INTO escalation (id, participant_id, facility_id, network, category, "
                "description, tier, status, ack_deadline, breached, chain_level, raised_by, "
                "raised_at, version, updated_at) VALUES (%s, %s, %s, 'incarcerated', "
                "'self_harm', 'Benchmark breach check.', 'high', 'open', %s, false, 0, 'bench', "
                "%s, 1, %s)", (eid, seeded.ids[1], seeded.facility_id, deadline, now, now))
            t_end = time.monotonic() + lead_s + timeout_s
            detected = None
            while time.monotonic() < t_end:
                row = conn.execute("SELECT breached, updated_at, chain_level FROM escalation "
                                   "WHERE id = %s", (eid,)).fetchone()
                if row and row[0]:
                    seen = utcnow()
                    detected = {"seen_delay_s": (seen - deadline).total_seconds(),
                                "marked_delay_s": (row[1] - deadline).total_seconds(),
                                "chain_level": row[2]}
                    break
                if worker.poll() is not None:
                    raise RuntimeError(f"worker exited ({worker.returncode}); see {log.name}")
                time.sleep(0.1)
            out["detected"] = detected
    finally:
        if worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(timeout=15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        log.close()
        out["worker_exit"] = worker.returncode
    d = out["detected"]
    out["pass"] = d is not None and d["seen_delay_s"] < BREACH_TARGET_S
    if d is None:
        out["line"] = (f"breach detection: NOT detected within {timeout_s:g} s of the deadline  "
                       f"FAIL   (worker stopped, exit {out['worker_exit']})")
    else:
        out["line"] = (f"breach detection: seen {d['seen_delay_s']:.2f} s after the deadline "
                       f"(the worker's sweep at +{d['marked_delay_s']:.2f} s; default 5 s "
                       f"interval)  target < {BREACH_TARGET_S:g} s "
                       f"{'PASS' if out['pass'] else 'FAIL'}   (worker stopped, exit "
                       f"{out['worker_exit']})")
    print(f"  {out['line']}", flush=True)
    return out
