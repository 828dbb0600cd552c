"""auth sessions by expiry

Signing in deletes sessions that expired a while ago, with their nonces, found through
this index.

Revision ID: 5d1e7c3b9a42
Revises: 894b535ef5b1
Create Date: 2026-12-02 22:05:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5d1e7c3b9a42"
down_revision: str | None = "894b535ef5b1"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_sessions_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("auth_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_auth_sessions_expires_at"))
