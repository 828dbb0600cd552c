"""royalty batch refusals

A royalty payout batch the Fund refuses (its ``payout`` reverts) goes back to
``pending`` with the revert recorded in ``last_error``, while the run's other
batches are paid; the column is cleared once the batch is paid.

Revision ID: f2078166a503
Revises: 9d4f2a6c1e83
Create Date: 2026-12-03 16:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f2078166a503"
down_revision: str | None = "9d4f2a6c1e83"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pool_royalty_payout_batches", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("pool_royalty_payout_batches", schema=None) as batch_op:
        batch_op.drop_column("last_error")
