"""Test harness: a real migrated database (SQLite by default, PostgreSQL when
TEST_DATABASE_URL says so), a fresh state per test, the real app, real signed tokens."""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn
from fastapi.testclient import TestClient
from sqlalchemy import bindparam, create_engine, text
from sqlalchemy.engine import make_url

from app.config import Settings
from app.db import metadata
from app.main import create_app
from app.models.support_session import DEFAULT_TOPICS
from app.security.tokens import generate_private_key_pem
from tests.factories import Factory

PG_URL = os.environ.get("TEST_DATABASE_URL", "")
IS_PG = PG_URL.startswith("postgres")
TEST_KEY = generate_private_key_pem()


def _worker() -> str:
    return os.environ.get("PYTEST_XDIST_WORKER", "main")


def _pg_admin_url() -> str:
    return make_url(PG_URL).set(drivername="postgresql+psycopg", database="postgres") \
        .render_as_string(hide_password=False)


def _create_pg_database() -> str:
    name = f"peerlink_test_{_worker()}_{uuid.uuid4().hex[:8]}"
    try:
        admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
    except Exception as exc:  # unreachable PostgreSQL must never pass silently
        pytest.exit(f"TEST_DATABASE_URL is set but PostgreSQL is unreachable: {exc}", returncode=3)
    return make_url(PG_URL).set(drivername="postgresql+psycopg", database=name) \
        .render_as_string(hide_password=False)


def _drop_pg_database(url: str) -> None:
    name = make_url(url).database
    admin = create_engine(_pg_admin_url(), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def migrated_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from app.migrations import upgrade

    if IS_PG:
        url = _create_pg_database()
        upgrade(url)
        yield url
        _drop_pg_database(url)
    else:
        template = tmp_path_factory.mktemp("db") / "template.db"
        url = f"sqlite:///{template}"
        upgrade(url)
        yield url


@pytest.fixture()
def db_url(migrated_url: str, tmp_path: Path) -> Iterator[str]:
    """A clean, migrated database for this test."""
    if IS_PG:
        engine = create_engine(migrated_url)
        # Reference data seeded by migrations (the topic vocabulary) stays.
        tables = ", ".join(f'"{t.name}"' for t in metadata.sorted_tables
                           if t.name not in {"session_topic"})
        with engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
            conn.execute(text("DELETE FROM session_topic WHERE code NOT IN :keep")
                         .bindparams(bindparam("keep", expanding=True)),
                         {"keep": list(DEFAULT_TOPICS)})
            # A tampering test may have switched the append-only guard off.
            conn.execute(text("ALTER TABLE audit_event ENABLE TRIGGER audit_event_append_only"))
        engine.dispose()
        yield migrated_url
    else:
        src = Path(make_url(migrated_url).database or "")
        dst = tmp_path / "test.db"
        shutil.copyfile(src, dst)
        yield f"sqlite:///{dst}"


@pytest.fixture()
def settings(db_url: str) -> Settings:
    return Settings(database_url=db_url, mode="development", jwt_private_key=TEST_KEY,
                    log_level="WARNING", rate_limit_storage="memory://",
                    embedded_worker=False)  # jobs run where a test calls them


@pytest.fixture()
def app(settings: Settings):  # type: ignore[no-untyped-def]
    return create_app(settings)


@pytest.fixture()
def client(app) -> Iterator[TestClient]:  # type: ignore[no-untyped-def]
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


@pytest.fixture()
def factory(settings: Settings, app) -> Iterator[Factory]:  # type: ignore[no-untyped-def]
    f = Factory(settings, app.state.keyring)
    yield f
    f.close()


@pytest.fixture()
def is_pg() -> bool:
    return IS_PG


@pytest.fixture()
def live_server(app) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The app served by uvicorn on a free loopback port, for clients in other processes."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                           lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the live server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(timeout=10)
