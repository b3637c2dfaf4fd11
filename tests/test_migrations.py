"""Migrations run up, all the way down, and up again on the test database; the models
and the migrated schema agree (no pending autogenerate diff)."""

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.config import Settings
from app.db import make_sync_engine, metadata
from app.migrations import downgrade, head_revision, upgrade


def test_upgrade_downgrade_upgrade(db_url):
    upgrade(db_url)
    downgrade(db_url, "base")
    engine = create_engine(Settings(database_url=db_url).sync_database_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()
    upgrade(db_url)
    engine = make_sync_engine(Settings(database_url=db_url))
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn)
        assert ctx.get_current_revision() == head_revision()
        diff = compare_metadata(ctx, metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree: {diff}"


def test_readyz_reports_migrated_database(client):
    r = client.get("/readyz")
    # No job has run yet: ready (a fresh database's grace, app/config.py), no ages to show.
    assert r.status_code == 200 and r.json() == {"status": "ok", "jobs": {}}
    assert client.get("/livez").json() == {"status": "ok"}
