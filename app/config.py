"""Settings from the environment (prefix PEERLINK_), with the safety checks production needs."""

from __future__ import annotations

import ipaddress
import json
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
VAR_DIR = ROOT / "var"
DEV_KEY_FILE = VAR_DIR / "dev-signing-key.pem"
DEV_NOTE_KEY_FILE = VAR_DIR / "dev-note-key"


class CertificationPolicy(BaseModel):
    validity_months: int = Field(24, ge=1, le=120)
    refresher_hours: float = Field(8.0, ge=0, le=500)


def _default_policies() -> dict[str, CertificationPolicy]:
    return {"incarcerated": CertificationPolicy(), "staff": CertificationPolicy()}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PEERLINK_", env_file=".env", extra="ignore")

    mode: Literal["development", "production"] = "development"
    database_url: str = f"sqlite:///{VAR_DIR / 'peerlink.db'}"
    host: str = "127.0.0.1"
    port: int = 8000
    db_pool_size: int = 10
    # Crisis first (app/admission.py): routine requests in flight per API process; more wait
    # their turn, crisis routes never do. Below db_pool_size, so crisis work finds a connection.
    admission_routine_limit: int = Field(6, ge=1)
    # How long a routine request waits for its turn at most; then 503 `overloaded`, Retry-After.
    admission_queue_seconds: float = Field(10, gt=0, le=300)

    # Tokens
    issuer: str = "peerlink"
    audience: str = "peerlink-api"
    access_token_minutes: int = Field(15, ge=1, le=15)
    refresh_token_days: int = Field(14, ge=1, le=90)
    jwt_algorithm: Literal["ES256"] = "ES256"
    # Signing key: PEM text or a path to a PEM file. Unset in development: a key is generated
    # under var/ on first start. Production refuses to start without one.
    jwt_private_key: SecretStr | None = None
    jwt_private_key_file: Path | None = None
    # Public keys (PEM files) of retired signing keys, still accepted for verification.
    jwt_previous_public_key_files: list[Path] = Field(default_factory=list)
    # How long a process may reuse an account's checked state for one token (0 = never).
    # Revocations and account changes invalidate at once (LISTEN/NOTIFY); this bounds the rest.
    principal_cache_seconds: float = Field(10.0, ge=0, le=60)
    # How often each API process checks its LISTEN connection (PostgreSQL): the cache is served
    # only while it answered within two of these, so a connection that dies silently costs at
    # most that long; one the server cuts, nothing (app.security.invalidation).
    principal_cache_heartbeat_seconds: float = Field(0.5, gt=0, le=5)

    # Certificate validity and renewal per network (JSON in PEERLINK_CERTIFICATION).
    certification: dict[str, CertificationPolicy] = Field(default_factory=_default_policies)

    # Confidential notes: master keys by id (base64 of 32 random bytes) and the current one.
    note_keys: dict[str, SecretStr] = Field(default_factory=dict)
    note_key_id: str | None = None

    # Background jobs (app/worker.py): inside the service, or `peerlink worker` on its own.
    # Unset: inside the service on the embedded SQLite, a separate process on PostgreSQL.
    embedded_worker: bool | None = None
    certification_sweep_minutes: float = Field(60, gt=0)
    # How often the worker looks for escalations past their acknowledgement deadline.
    escalation_sweep_seconds: float = Field(5, gt=0, le=60)
    # The watch log: how far ahead of the server's clock an observation may be dated (a
    # handheld's clock runs a little fast), and how long after the observation an entry may be
    # written before it is marked late (a late entry never counts toward the staff cadence).
    observation_clock_skew_seconds: float = Field(120, ge=0, le=900)
    observation_late_minutes: float = Field(15, gt=0, le=24 * 60)
    # A page nobody acknowledged is sent again this often (a new `escalation.paged`).
    page_repeat_minutes: float = Field(2, gt=0, le=60)
    # /readyz answers 503 once the breach sweep's last successful round (any worker's) is older
    # than this; a database where it never ran is ready for this long after the API process
    # first checks (a fresh install, the worker still starting), then unready.
    ready_max_sweep_age_seconds: float = Field(60, gt=0)

    # Idempotency-Key: how long a key and its stored response are kept, and how long a request
    # holds its key before a retry may take it over (only if that request wrote nothing).
    idempotency_hours: float = Field(24, gt=0, le=24 * 7)
    idempotency_lease_seconds: float = Field(60, gt=0)

    # Webhooks: HTTP timeout per attempt, how often the worker looks for due deliveries, how
    # long a delivery is retried (exponential backoff with jitter), and after how many failed
    # attempts in a row an endpoint is disabled (16 ~ the three days of backoff).
    webhook_timeout_seconds: float = Field(10, gt=0, le=60)
    webhook_poll_seconds: float = Field(2, gt=0, le=60)
    webhook_retry_hours: float = Field(72, gt=0, le=24 * 14)
    webhook_disable_after_failures: int = Field(16, ge=1, le=1000)
    # Finished deliveries (and their attempts) older than this leave the delivery log.
    webhook_log_days: int = Field(30, ge=1, le=3650)

    # Reports (/v1/reports): a count of fewer people than this is suppressed, and so is a rate
    # or average over fewer (DOMAIN rule 9; docs/reports.md). At least 3: with 2, a suppressed
    # cell could only be 1.
    report_min_cell: int = Field(11, ge=3, le=100)

    # The live stream (GET /v1/stream): a heartbeat comment (and the caller's token and account
    # checked again) this often; how many events may wait for a slow reader before it is
    # disconnected (it resumes with Last-Event-ID); how long a browser's stream ticket lives.
    stream_heartbeat_seconds: float = Field(15, gt=0, le=60)
    stream_queue_size: int = Field(1_000, ge=10, le=100_000)
    stream_ticket_seconds: int = Field(30, ge=5, le=300)

    cors_origins: list[str] = Field(default_factory=list)
    # The OAuth2 password grant (a token handed to the caller's own code): for scripts and
    # tests. Unset: on in development, off in production, where people sign in through the
    # browser session (POST /v1/session, tokens in httpOnly cookies) and machines use
    # client_credentials.
    password_grant_enabled: bool | None = None
    max_body_bytes: int = 1_000_000
    # The reverse proxies (TLS terminators, load balancers) in front of the API: IPs or CIDRs,
    # comma-separated (PEERLINK_TRUSTED_PROXIES=10.0.0.5,10.1.0.0/16). Only a request whose
    # direct peer is one of them has its X-Forwarded-For / X-Forwarded-Proto believed, for
    # rate limits, sign-in throttling and the audit trail. Empty (the default): never.
    trusted_proxies: Annotated[list[str], NoDecode] = Field(default_factory=list)

    # Bulk imports (POST /v1/imports/...): their own body cap; files up to import_sync_max_rows
    # rows are answered in the request, larger ones become a job (202) run in chunks.
    import_max_bytes: int = 64_000_000
    import_sync_max_rows: int = Field(2_000, ge=1)
    import_chunk_rows: int = Field(1_000, ge=1, le=10_000)
    import_lease_seconds: float = Field(60, gt=0)
    import_max_errors: int = Field(1_000, ge=1)
    # PostgreSQL with `peerlink worker` processes: a large import is offered to them first
    # (NOTIFY peerlink_imports), so its chunks never share an API process's interpreter with
    # the requests it serves; the API process runs the job itself only if no worker has taken
    # it within this many seconds. 0: always in the API process. (SQLite, or an embedded
    # worker: always in the API process, which is the worker.)
    import_worker_handoff_seconds: float = Field(2.0, ge=0, le=60)

    # Login throttling (failures) and the storage behind it (memory:// or redis://...).
    login_limit_per_username: str = "5/minute"
    login_limit_per_address: str = "20/minute"
    rate_limit_storage: str = "memory://"
    # Every counter key starts with this (app.counters), so deployments sharing one Redis keep
    # their budgets apart: name the deployment (peerlink-prod, peerlink-staging).
    rate_limit_prefix: str = Field("peerlink", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    # Every other request: per caller (the token's subject) and, without a valid token, per
    # address. Raising a crisis escalation is never limited. Several API processes share the
    # counts only through a shared storage (redis://...).
    rate_limit_enabled: bool = True
    rate_limit_per_caller: str = "3000/minute"
    rate_limit_anonymous: str = "300/minute"

    log_level: str = "INFO"

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_trusted_proxies(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            value = json.loads(text) if text.startswith("[") else \
                [part.strip() for part in text.split(",") if part.strip()]
        if isinstance(value, list):
            for item in value:
                try:
                    ipaddress.ip_network(str(item), strict=False)
                except ValueError:
                    raise ValueError(f"trusted_proxies: {item!r} is not an IP address or CIDR "
                                     "network") from None
        return value

    @model_validator(mode="after")
    def _crisis_keeps_connections(self) -> Settings:
        if self.admission_routine_limit >= self.db_pool_size:
            raise ValueError("admission_routine_limit must be below db_pool_size: routine "
                             "requests must leave connections for crisis work")
        return self

    @model_validator(mode="after")
    def _production_needs_real_secrets(self) -> Settings:
        if self.mode == "production":
            if self.jwt_private_key is None and self.jwt_private_key_file is None:
                raise ValueError("production mode needs PEERLINK_JWT_PRIVATE_KEY(_FILE)")
            if self.jwt_private_key_file and self.jwt_private_key_file.resolve() == DEV_KEY_FILE:
                raise ValueError("production mode refuses the generated development key")
            if not self.note_keys:
                raise ValueError("production mode needs PEERLINK_NOTE_KEYS")
            if "*" in self.cors_origins:
                raise ValueError("production mode refuses a wildcard CORS origin")
        return self

    @property
    def run_embedded_worker(self) -> bool:
        return self.is_sqlite if self.embedded_worker is None else self.embedded_worker

    @property
    def password_grant_allowed(self) -> bool:
        if self.password_grant_enabled is None:
            return self.mode == "development"
        return self.password_grant_enabled

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def sync_database_url(self) -> str:
        """URL for the synchronous driver (Alembic, CLI)."""
        url = self.database_url
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            return "postgresql+psycopg://" + url.split("://", 1)[1]
        return url.replace("sqlite+aiosqlite://", "sqlite://")

    @property
    def async_database_url(self) -> str:
        url = self.sync_database_url
        if url.startswith("sqlite://"):
            return "sqlite+aiosqlite://" + url.split("://", 1)[1]
        return url


@lru_cache
def get_settings() -> Settings:
    return Settings()
