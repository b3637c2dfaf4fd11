"""the audit trail records the client's address

Revision ID: 3f9a1c7e2d58
Revises: c7e3a91d4b20
Create Date: 2026-12-01 12:00:00

`audit_event.client_address`: the request's client (behind a trusted proxy, the forwarded
address; app/proxies.py). Nullable: rows written before it, and by the worker or the CLI,
have none; the hash covers it only when present, so the existing chain still verifies.
"""
from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel  # noqa: F401
from alembic import op

revision: str = '3f9a1c7e2d58'
down_revision: str | None = '7c1d2e3f4a5b'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('audit_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_address', sqlmodel.sql.sqltypes.AutoString(length=64),
                                      nullable=True))


def downgrade() -> None:
    # In place on both (SQLite >= 3.35 drops a column itself): a batch copy of the table would
    # lose its append-only triggers.
    op.drop_column('audit_event', 'client_address')
