"""Health probes: /livez (the process) and /readyz (database reachable and migrated)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from app.deps import EngineDep

router = APIRouter(tags=["operations"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "Not ready"}})
async def readyz(engine: EngineDep) -> JSONResponse:
    from app.migrations import head_revision

    try:
        async with engine.connect() as conn:
            current = (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
    except Exception:
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, 503)
    if current != head_revision():
        return JSONResponse({"status": "unavailable", "database": "not migrated"}, 503)
    return JSONResponse({"status": "ok"})
