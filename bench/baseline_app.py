"""Reference endpoints measured beside peerlink in the same run (a separate uvicorn process).

GET /bare        an `async def` FastAPI endpoint returning a small dict: the framework's ceiling.
GET /naive/{id}  the FastAPI full-stack template's way of reading an item: a sync `def`
                 endpoint, a sync-generator Session dependency on a sync engine
                 (postgresql+psycopg), `session.get(Model, id)`, the table model returned.
                 No authentication at all. Pool sized like peerlink's (10 + 10 overflow).

Run: BENCH_BASELINE_DATABASE_URL=postgresql://... uvicorn bench.baseline_app:create_app --factory
"""


import os
import uuid
from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session

from app.models import Participant


def _sync_url(url: str) -> str:
    if url.startswith(("postgresql://", "postgres://")):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


def create_app(url: str | None = None) -> FastAPI:
    url = url or os.environ["BENCH_BASELINE_DATABASE_URL"]
    engine: Engine = create_engine(_sync_url(url), pool_size=10, max_overflow=10)
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.state.engine = engine

    def get_db() -> Iterator[Session]:
        with Session(engine) as session:
            yield session

    SessionDep = Annotated[Session, Depends(get_db)]

    @app.get("/bare")
    async def bare() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/naive/{id}", response_model=Participant)
    def naive(session: SessionDep, id: uuid.UUID) -> Participant:
        item = session.get(Participant, id)
        if not item:
            raise HTTPException(status_code=404, detail="Item not found")
        return item

    return app
