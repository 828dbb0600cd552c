"""unused auth nonces by expiry

Issuing a sign-in nonce deletes unused nonces that expired a while ago, found through
this index (partial: used nonces stay with their session and are not scanned past).

Revision ID: 894b535ef5b1
Revises: c4e8a1f9d217
Create Date: 2026-12-02 19:31:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "894b535ef5b1"
down_revision: str | None = "c4e8a1f9d217"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("auth_nonces", schema=None) as batch_op:
        batch_op.create_index(
            "ix_auth_nonces_unused_expires_at",
            ["expires_at"],
            unique=False,
            postgresql_where=sa.text("used_at IS NULL"),
            sqlite_where=sa.text("used_at IS NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("auth_nonces", schema=None) as batch_op:
        batch_op.drop_index("ix_auth_nonces_unused_expires_at")
