"""settlement failures by time

A serving process whose listening connection for failed-fill notices was lost reads
the failures recorded since, by ``created_at``, once it listens again.

Revision ID: 9a4d2c6e1f30
Revises: f78410e6b261
Create Date: 2026-12-02 16:45:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9a4d2c6e1f30"
down_revision: str | None = "f78410e6b261"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("settlement_failures", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_settlement_failures_created_at"), ["created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("settlement_failures", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_failures_created_at"))
