"""indexes for large tables

The statements that read an account's orders, trades and withdrawals newest
first, the settler's reads and updates by batch and by settled order, and the
read of a vault's newest batch each had an index that did not fit them: on a
journal of millions of rows they scanned a table (or an account's every row)
and took from tens of milliseconds to seconds. The fills' indexes are partial,
so the insert of a pending fill adds to none of them.

Revision ID: 27a0ba19fc21
Revises: f2078166a503
Create Date: 2026-12-03 22:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "27a0ba19fc21"
down_revision: str | None = "f2078166a503"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_OPEN = sa.text("status = 'open'")
_BATCHED = sa.text("batch_id IS NOT NULL")
_SETTLED = sa.text("settlement_state = 'settled'")


def upgrade() -> None:
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_trading_orders_account_id"), ["account", "id"], unique=False)
        batch_op.create_index(
            "ix_trading_orders_open_account_id",
            ["account", "id"],
            unique=False,
            postgresql_where=_OPEN,
            sqlite_where=_OPEN,
        )
    with op.batch_alter_table("trading_fills", schema=None) as batch_op:
        batch_op.create_index(
            "ix_trading_fills_batched_batch_id",
            ["batch_id"],
            unique=False,
            postgresql_where=_BATCHED,
            sqlite_where=_BATCHED,
        )
        for role in ("maker", "taker"):
            batch_op.create_index(
                f"ix_trading_fills_settled_{role}_order_id",
                [f"{role}_order_id"],
                unique=False,
                postgresql_where=_SETTLED,
                sqlite_where=_SETTLED,
            )
    with op.batch_alter_table("trading_withdrawals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trading_withdrawals_account_id"), ["account", "id"], unique=False
        )
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_settlement_batches_vault_id"), ["vault", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("settlement_batches", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_settlement_batches_vault_id"))
    with op.batch_alter_table("trading_withdrawals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trading_withdrawals_account_id"))
    with op.batch_alter_table("trading_fills", schema=None) as batch_op:
        for role in ("taker", "maker"):
            batch_op.drop_index(f"ix_trading_fills_settled_{role}_order_id")
        batch_op.drop_index("ix_trading_fills_batched_batch_id")
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.drop_index("ix_trading_orders_open_account_id")
        batch_op.drop_index(batch_op.f("ix_trading_orders_account_id"))
