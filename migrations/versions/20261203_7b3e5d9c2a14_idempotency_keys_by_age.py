"""idempotency keys by age

Keys are kept for a retention period (a day by default); the purge of older
ones finds them through this index.

Revision ID: 7b3e5d9c2a14
Revises: 40358130b892
Create Date: 2026-12-03 03:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "7b3e5d9c2a14"
down_revision: str | None = "40358130b892"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trading_idempotency_keys", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trading_idempotency_keys_created_at"), ["created_at"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("trading_idempotency_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trading_idempotency_keys_created_at"))
