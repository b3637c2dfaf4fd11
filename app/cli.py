"""The `peerlink` command: serve, migrate, create accounts, export the contract, demo data,
verify the audit chain."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from app.config import ROOT, get_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
db_app = typer.Typer(no_args_is_help=True, help="Database migrations.")
users_app = typer.Typer(no_args_is_help=True, help="User accounts.")
clients_app = typer.Typer(no_args_is_help=True, help="API clients (machines).")
audit_app = typer.Typer(no_args_is_help=True, help="The audit trail.")
app.add_typer(db_app, name="db")
app.add_typer(users_app, name="users")
app.add_typer(clients_app, name="clients")
app.add_typer(audit_app, name="audit")


def _run(coro_fn: Any) -> Any:
    async def runner() -> Any:
        from app.db import make_async_engine, make_sessionmaker

        engine = make_async_engine(get_settings())
        try:
            async with make_sessionmaker(engine)() as session:
                return await coro_fn(session)
        finally:
            await engine.dispose()

    return asyncio.run(runner())


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def serve(host: Annotated[str | None, typer.Option()] = None,
          port: Annotated[int | None, typer.Option()] = None,
          workers: int = 1, migrate: bool = True) -> None:
    """Migrate (unless --no-migrate) and serve the API."""
    import uvicorn

    settings = get_settings()
    if migrate:
        from app.migrations import upgrade

        upgrade()
    _say_if_no_admin()
    uvicorn.run("app.main:create_app", factory=True, host=host or settings.host,
                port=port or settings.port, workers=workers, log_config=None,
                # The app reads proxy headers itself, from PEERLINK_TRUSTED_PROXIES only
                # (app/proxies.py); uvicorn's own default would trust 127.0.0.1.
                proxy_headers=False, access_log=False)


def _say_if_no_admin() -> None:
    from sqlalchemy import func, select

    from app.models import User

    async def count(session: Any) -> int:
        return int((await session.execute(select(func.count()).select_from(User)
                                          .where(User.role == "admin"))).scalar_one())

    if _run(count) == 0:
        typer.echo(
            "No admin account yet. Create the first one with:\n"
            "  printf '%s' 'a-long-password' | .venv/bin/peerlink users create "
            "--username admin --role admin --password-stdin\n"
            "(or `make demo` in development mode for demo accounts)", err=True)


@db_app.command("upgrade")
def db_upgrade(revision: str = "head") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from app.migrations import upgrade

    upgrade(revision=revision)
    typer.echo("database is at the latest migration" if revision == "head" else f"at {revision}")


@db_app.command("downgrade")
def db_downgrade(revision: str) -> None:
    """Revert migrations down to REVISION ('base' empties the schema)."""
    from app.migrations import downgrade

    downgrade(revision=revision)


@users_app.command("create")
def users_create(
    username: Annotated[str, typer.Option()],
    role: Annotated[str, typer.Option()],
    facility: Annotated[list[str] | None, typer.Option(help="Facility code; repeat; none = all")] = None,
    participant_id: Annotated[str | None, typer.Option()] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
) -> None:
    """Create a user; the password is read from standard input (never from the command line)."""
    from pydantic import ValidationError

    from app.errors import DomainError
    from app.models.account import UserCreate
    from app.services import accounts

    if not password_stdin:
        _fail("pass --password-stdin and send the password on standard input")
    password = sys.stdin.read().rstrip("\r\n")
    try:
        data = UserCreate(username=username, password=password, role=role,  # type: ignore[arg-type]
                          facility_codes=facility or None, participant_id=participant_id)
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    async def go(session: Any) -> Any:
        return await accounts.create_user(session=session, principal=None, data=data)

    try:
        user = _run(go)
    except DomainError as exc:
        _fail(exc.detail)
    typer.echo(json.dumps({"id": str(user.id), "username": user.username, "role": user.role}))


@clients_app.command("create")
def clients_create(
    name: Annotated[str, typer.Option()],
    scope: Annotated[list[str], typer.Option(help="Scope to grant; repeat")],
    facility: Annotated[list[str] | None, typer.Option(help="Facility code; repeat; none = all")] = None,
    network: Annotated[list[str] | None, typer.Option(help="incarcerated (default) and/or staff")] = None,
) -> None:
    """Create an API client; prints its id and secret once."""
    from pydantic import ValidationError

    from app.errors import DomainError
    from app.models.account import ClientCreate
    from app.services import accounts

    try:
        data = ClientCreate(name=name, scopes=scope, facility_codes=facility or None,
                            networks=network or ["incarcerated"])  # type: ignore[arg-type]
    except ValidationError as exc:
        _fail("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()))

    async def go(session: Any) -> Any:
        return await accounts.create_client(session=session, principal=None, data=data)

    try:
        client, secret = _run(go)
    except DomainError as exc:
        _fail(exc.detail)
    typer.echo(json.dumps({"client_id": client.client_id, "client_secret": secret,
                           "scopes": client.scopes}))


import_app = typer.Typer(no_args_is_help=True, help="Bulk imports from a jail management system.")
app.add_typer(import_app, name="import")


def _import(kind: str, file: Path, fmt: str | None, client_id: str) -> None:
    """Runs an import file through the same code as POST /v1/imports/..., as an API client
    (its scopes, facilities and networks; audited as that client), with a progress bar."""
    from sqlalchemy import select

    from app.errors import DomainError
    from app.models import ApiClient
    from app.models.import_job import ImportFormat, ImportKind, ImportRead
    from app.security.principal import load_principal
    from app.security.tokens import InvalidToken
    from app.services import imports

    if fmt is None:
        fmt = "csv" if file.suffix.lower() == ".csv" else "jsonl"
    if fmt not in ("csv", "jsonl"):
        _fail("--format is csv or jsonl")
    content = file.read_bytes()

    async def go(session: Any) -> Any:
        client = (await session.execute(select(ApiClient.id, ApiClient.scopes).where(
            ApiClient.client_id == client_id))).first()
        if client is None:
            _fail(f"no API client {client_id}")
        try:
            principal = await load_principal(session, {
                "sub": str(client.id), "sub_kind": "client", "jti": f"cli:{uuid.uuid4()}",
                "scope": " ".join(client.scopes)})
        except InvalidToken:
            _fail(f"API client {client_id} is not active")
        await session.commit()
        with typer.progressbar(length=1, label=f"importing {file.name}", file=sys.stderr) as bar:
            done = [0]

            def progress(job: Any) -> None:
                bar.length = job.rows_total
                bar.update(job.rows_done - done[0])
                done[0] = job.rows_done

            job = await imports.submit(session=session, settings=get_settings(),
                                          principal=principal, kind=ImportKind(kind),
                                          fmt=ImportFormat(fmt), content=content,
                                          progress=progress)
        return ImportRead.of(job)

    try:
        result = _run(go)
    except DomainError as exc:
        _fail(f"{exc.code}: {exc.detail}")
    typer.echo(result.model_dump_json(indent=2))
    if result.failed:
        raise typer.Exit(1)


_ClientOpt = Annotated[str, typer.Option("--client", help="Act as this API client (client id)")]
_FormatOpt = Annotated[str | None, typer.Option("--format", help="csv or jsonl (default: by "
                                                                 "the file's extension)")]


@import_app.command("participants")
def import_participants(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                        client: _ClientOpt, format: _FormatOpt = None) -> None:
    """Upsert participants by external id from FILE (CSV or JSON lines); exit 1 if rows failed."""
    _import("participants", file, format, client)


@import_app.command("keep-apart-orders")
def import_keep_apart_orders(file: Annotated[Path, typer.Argument(exists=True, dir_okay=False)],
                             client: _ClientOpt, format: _FormatOpt = None) -> None:
    """Open and close keep-apart orders by the JMS's order id from FILE; exit 1 if rows failed."""
    _import("keep_apart_orders", file, format, client)


notes_app = typer.Typer(no_args_is_help=True, help="Confidential notes.")
app.add_typer(notes_app, name="notes")


@notes_app.command("rewrap")
def notes_rewrap(batch: int = 500) -> None:
    """Re-wrap every note's data key with the current master key (PEERLINK_NOTE_KEY_ID), after
    a rotation; the note texts are not decrypted. Then the old key can be retired."""
    from sqlalchemy import select

    from app.models import SupportSession
    from app.security.notes import NoteCipher
    from app.services.writer import Writer

    settings = get_settings()
    cipher = NoteCipher.from_settings(settings)
    S = SupportSession.__table__.c

    async def go(session: Any) -> int:
        done = 0
        while True:
            rows = (await session.execute(
                select(SupportSession).where(S.note_key_id.is_not(None),
                                             S.note_key_id != cipher.current)
                .order_by(S.id).limit(batch).with_for_update())).scalars().all()
            if not rows:
                return done
            w = Writer(session, None)
            for s in rows:
                s.note_wrapped_key, s.note_key_id = cipher.rewrap(
                    s.note_wrapped_key, s.note_key_id, s.id.bytes)
                w.audit("support_session.note_rewrap", "support_session", s.id, s.facility_id)
            await w.commit()
            done += len(rows)

    typer.echo(json.dumps({"rewrapped": _run(go), "key_id": cipher.current}))


webhooks_app = typer.Typer(no_args_is_help=True, help="Webhook endpoints.")
app.add_typer(webhooks_app, name="webhooks")


@webhooks_app.command("rewrap")
def webhooks_rewrap() -> None:
    """Re-wrap every webhook signing secret with the current note master key, after a
    rotation (as `notes rewrap` does for notes); then the old key can be retired."""
    from sqlalchemy import select

    from app.models import WebhookEndpoint
    from app.security.notes import NoteCipher
    from app.services.webhooks import secret_aad
    from app.services.writer import Writer

    cipher = NoteCipher.from_settings(get_settings())
    E = WebhookEndpoint.__table__.c

    async def go(session: Any) -> int:
        rows = (await session.execute(
            select(WebhookEndpoint).where(E.secret_key_id != cipher.current)
            .order_by(E.id).with_for_update())).scalars().all()
        w = Writer(session, None)
        for ep in rows:
            ep.secret_wrapped_key, ep.secret_key_id = cipher.rewrap(
                ep.secret_wrapped_key, ep.secret_key_id, secret_aad(ep.id))
            w.audit("webhook_endpoint.secret_rewrap", "webhook_endpoint", ep.id)
        await w.commit()
        return len(rows)

    typer.echo(json.dumps({"rewrapped": _run(go), "key_id": cipher.current}))


@app.command("worker")
def worker_cmd(
    metrics_port: Annotated[int | None, typer.Option(
        help="Serve this process's Prometheus metrics on this port (off by default)")] = None,
    metrics_host: Annotated[str, typer.Option(help="Address for --metrics-port")] = "127.0.0.1",
) -> None:
    """Run the background jobs (certification sweep, ...) until interrupted."""
    # A stop asked for while still starting (imports take a moment on a busy host) is kept
    # and honoured as soon as the loop runs, instead of killing the process.
    early: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: early.append(signum))
    from app import heap
    from app.db import make_async_engine, make_sessionmaker
    from app.logging import configure_logging
    from app.worker import run_forever, taking_imports

    settings = get_settings()
    configure_logging(settings.log_level)
    if metrics_port is not None:
        from prometheus_client import start_http_server

        # The default registry: rounds by job and outcome, this process's last successes,
        # and the process collector. (The database-wide figures are the API's /metrics.)
        start_http_server(metrics_port, addr=metrics_host)

    async def go() -> None:
        # SIGTERM (a deploy, a scale-down) lets the round in progress commit, then stops.
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        if early:
            stop.set()
        engine = make_async_engine(settings)
        maker = make_sessionmaker(engine)
        heap.settle()  # as the API's: an import's chunks allocate heavily
        try:
            async with taking_imports(maker, settings):
                await run_forever(maker, settings, stop)
        finally:
            await engine.dispose()

    asyncio.run(go())


@app.command("run-job")
def run_job_cmd(name: str) -> None:
    """Run one round of a background job now (e.g. certification_sweep) and print its result."""
    from app.worker import _jobs, run_job

    job = next((j for j in _jobs() if j.name == name), None)
    if job is None:
        _fail(f"unknown job {name}; known: {', '.join(j.name for j in _jobs())}")

    async def go(session: Any) -> Any:
        from app.db import make_sessionmaker

        return await run_job(make_sessionmaker(session.bind), get_settings(), job)

    typer.echo(json.dumps(_run(go)))


@app.command()
def openapi(output: Path = ROOT / "openapi" / "openapi.json") -> None:
    """Write the OpenAPI contract the app generates."""
    output.write_text(openapi_text())
    typer.echo(f"wrote {output}")


def openapi_text() -> str:
    from app.main import create_app

    return json.dumps(create_app().openapi(), indent=2, sort_keys=False) + "\n"


@app.command()
def backup(file: Annotated[Path, typer.Argument(help="Where to write the copy (must not exist)")],
           ) -> None:
    """Copy the SQLite database to FILE, safely while the service runs (SQLite's online backup
    API: a consistent snapshot, writers are not stopped). On PostgreSQL use pg_dump
    (docs/operations.md)."""
    import sqlite3

    from sqlalchemy.engine import make_url

    settings = get_settings()
    if not settings.is_sqlite:
        _fail("this database is PostgreSQL: back it up with pg_dump -Fc (and WAL archiving for "
              "point-in-time recovery), see docs/operations.md")
    source = make_url(settings.sync_database_url).database
    if not source or source == ":memory:" or not Path(source).exists():
        _fail(f"no SQLite database file at {source!r}")
    if file.exists():
        _fail(f"{file} exists; choose a new file")
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(file)
    try:
        with dst:
            # Copies in steps of 1,024 pages; a write in between restarts the copy from a
            # consistent point, so the result is always one committed state.
            src.backup(dst, pages=1024, sleep=0.01)
        ok = dst.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        dst.close()
        src.close()
    if ok != "ok":
        _fail(f"the copy failed its integrity check: {ok}")
    typer.echo(json.dumps({"backup": str(file), "bytes": file.stat().st_size}))


@app.command()
def report(
    facility: Annotated[str, typer.Option("--facility", help="The facility's code")],
    month: Annotated[str, typer.Option("--month", help="YYYY-MM")],
    out: Annotated[Path, typer.Option("--out", help="The HTML file to write")],
    network: Annotated[str, typer.Option("--network", help="incarcerated or staff")]
    = "incarcerated",
) -> None:
    """Write the monthly program report (one self-contained HTML page, de-identified and
    suppressed exactly as GET /v1/reports/program.html serves it)."""
    from app.errors import DomainError
    from app.models.common import Network, Role
    from app.reports import render
    from app.reports import service as reports
    from app.security.principal import Principal

    if network not in {n.value for n in Network}:
        _fail("--network is incarcerated or staff")
    # The operator reads as a de-identified reader of every facility: the page carries codes,
    # months and suppressed figures only, whoever asks.
    reader = Principal(kind="user", id=uuid.UUID(int=0), name="cli", role=Role.auditor,
                       scopes=frozenset({"reports:read"}), all_facilities=True,
                       facility_ids=frozenset(), networks=frozenset(), participant_id=None)

    async def go(session: Any) -> str:
        found = await reports.program(session=session, settings=get_settings(),
                                      principal=reader, first=month, last=month,
                                      facility=facility, network=network)
        return render.to_html(found)

    try:
        page = _run(go)
    except DomainError as exc:
        _fail(f"{exc.code}: {exc.detail}")
    out.write_text(page, encoding="utf-8")
    typer.echo(f"wrote {out}")


@app.command()
def demo() -> None:
    """Load the demo data set (development mode only)."""
    from app.demo import load_demo

    if get_settings().mode != "development":
        _fail("demo data is for development mode only")
    typer.echo(_run(load_demo))


@audit_app.command("verify")
def audit_verify() -> None:
    """Check the audit trail's hash chain; exits 1 when a row was changed or removed."""
    from sqlalchemy.orm import Session

    from app.db import make_sync_engine
    from app.services.audit import verify_chain

    engine = make_sync_engine(get_settings())
    with Session(engine) as session:
        count, bad = verify_chain(session)
    engine.dispose()
    if bad:
        typer.echo(f"audit chain BROKEN at {len(bad)} row(s): ids {bad[:20]}", err=True)
        raise typer.Exit(1)
    typer.echo(f"audit chain intact: {count} rows")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
