"""The restore drill (docs/operations.md; issue 12, item 8): back up a live database, restore
it into a new one, `peerlink audit verify` passes, every table's row count is equal, and a
confidential note still decrypts with the same note keys. SQLite through `peerlink backup`;
PostgreSQL through pg_dump / pg_restore when the binaries are on the machine."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from app.db import metadata
from app.main import create_app
from tests.conftest import _drop_pg_database, _pg_admin_url
from tests.test_support_sessions import NOTE, _complete, _one_to_one, ctx  # noqa: F401


def _cli(db_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PEERLINK_DATABASE_URL": db_url, "PEERLINK_LOG_LEVEL": "WARNING"}
    return subprocess.run([sys.executable, "-m", "app.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _counts(url: str) -> dict[str, int]:
    from app.config import Settings

    engine = create_engine(Settings(database_url=url).sync_database_url)
    with engine.connect() as conn:
        counts = {t.name: int(conn.execute(select(func.count()).select_from(t)).scalar_one())
                  for t in metadata.sorted_tables}
    engine.dispose()
    return counts


def _restore_pg(db_url: str, tmp_path: Path) -> str:
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.skip("pg_dump/pg_restore are not installed on this machine: the PostgreSQL "
                    "drill needs the client binaries (postgresql-client)")
    dump = tmp_path / "peerlink.dump"
    plain = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    out = subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", plain],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    name = f"peerlink_restored_{uuid.uuid4().hex[:8]}"
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    restored = make_url(db_url).set(database=name).render_as_string(hide_password=False)
    target = make_url(restored).set(drivername="postgresql").render_as_string(
        hide_password=False)
    out = subprocess.run(["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={target}",
                          str(dump)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return restored


def test_backup_restore_verify_count_and_read_a_note(client, factory, ctx, settings,  # noqa: F811
                                                     db_url, is_pg, tmp_path):
    s = _one_to_one(client, ctx)
    assert _complete(client, ctx, s["id"]).status_code == 200
    before = _counts(db_url)
    assert before["support_session"] == 1 and before["audit_event"] > 0

    if is_pg:
        restored = _restore_pg(db_url, tmp_path)
    else:
        copy = tmp_path / "backup.db"
        out = _cli(db_url, "backup", str(copy))  # the service (this client) still runs
        assert out.returncode == 0, out.stderr
        assert _cli(db_url, "backup", str(copy)).returncode == 2  # never overwrites
        restored = f"sqlite:///{tmp_path / 'restored.db'}"
        shutil.copyfile(copy, tmp_path / "restored.db")
    try:
        out = _cli(restored, "audit", "verify")
        assert out.returncode == 0 and "audit chain intact" in out.stdout, out.stderr
        assert _counts(restored) == before
        with TestClient(create_app(settings.model_copy(update={"database_url": restored}))) as c:
            r = c.get(f"/v1/support-sessions/{s['id']}/note", headers=ctx["peer"])
        assert r.status_code == 200 and r.json()["text"] == NOTE
    finally:
        if is_pg:
            _drop_pg_database(restored)


def test_backup_refuses_postgresql_and_points_to_pg_dump(tmp_path):
    out = _cli("postgresql://nobody@127.0.0.1:1/none", "backup", str(tmp_path / "x.db"))
    assert out.returncode == 2 and "pg_dump" in out.stderr
