"""fills by market and time

Public market data leaves out fills that failed settlement; the candles of a
minute that held one are rebuilt from that minute's other fills, found through
the first index. The second (partial: failed fills only) finds those minutes.

Revision ID: 3e8f1c2a7b55
Revises: 5d0c1e7a9b42
Create Date: 2026-12-02 06:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3e8f1c2a7b55"
down_revision: str | None = "5d0c1e7a9b42"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trading_fills", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trading_fills_market_id_created_at"), ["market_id", "created_at"], unique=False
        )
        batch_op.create_index(
            "ix_trading_fills_failed_market_id_created_at",
            ["market_id", "created_at"],
            unique=False,
            postgresql_where=sa.text("settlement_state = 'failed'"),
            sqlite_where=sa.text("settlement_state = 'failed'"),
        )


def downgrade() -> None:
    with op.batch_alter_table("trading_fills", schema=None) as batch_op:
        batch_op.drop_index("ix_trading_fills_failed_market_id_created_at")
        batch_op.drop_index(batch_op.f("ix_trading_fills_market_id_created_at"))
