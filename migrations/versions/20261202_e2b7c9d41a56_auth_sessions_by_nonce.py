"""auth sessions by nonce

A nonce signs one session in; the unique index also serves the foreign-key check that
deleting a nonce (the purges of expired nonces and sessions) makes against auth_sessions,
which scanned the table once per deleted nonce.

Revision ID: e2b7c9d41a56
Revises: 5d1e7c3b9a42
Create Date: 2026-12-02 22:35:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "e2b7c9d41a56"
down_revision: str | None = "5d1e7c3b9a42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_sessions_nonce"), ["nonce"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_sessions_nonce"))
