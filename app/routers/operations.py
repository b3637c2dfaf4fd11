"""Health probes: /livez (the process) and /readyz (database reachable and migrated, and the
crisis clock ticking: the breach sweep's last successful round is recent)."""

from __future__ import annotations

import time
import weakref
from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import EngineDep, SettingsDep

router = APIRouter(tags=["operations"])

# When this process first checked readiness against an engine (its database): the start of the
# grace a fresh database gets before its first breach sweep.
_first_check: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


_READY_EXAMPLE = {"status": "ok", "jobs": {"escalation_breach_sweep": 2.1,
                                           "webhook_delivery": 0.4}}


@router.get("/readyz", responses={
    200: {"description": "Ready: each background job's seconds since its last successful "
                         "round (null: none yet)",
          "content": {"application/json": {"example": _READY_EXAMPLE}}},
    503: {"description": "Not ready: the database is unreachable or not migrated, or the "
                         "breach sweep is stale (`worker`: `stale` or `never ran`)"}})
async def readyz(engine: EngineDep, settings: SettingsDep) -> JSONResponse:
    from app.db import utcnow
    from app.migrations import head_revision
    from app.services.liveness import BREACH_SWEEP, last_successes

    try:
        async with engine.connect() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
            migrated = current == head_revision()
            successes = await last_successes(conn) if migrated else {}
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    if not migrated:
        return JSONResponse({"status": "unavailable", "database": "not migrated"}, 503)
    now = utcnow()
    jobs = {name: (round((now - at).total_seconds(), 1) if at else None)
            for name, at in sorted(successes.items())}
    limit = settings.ready_max_sweep_age_seconds
    sweep_age = jobs.get(BREACH_SWEEP)
    if sweep_age is None:
        first = _first_check.setdefault(engine.sync_engine, time.monotonic())
        if time.monotonic() - first > limit:
            return JSONResponse({"status": "unavailable", "worker": "never ran", "jobs": jobs},
                                503)
    elif sweep_age > limit:
        return JSONResponse({"status": "unavailable", "worker": "stale", "jobs": jobs}, 503)
    return JSONResponse({"status": "ok", "jobs": jobs})
