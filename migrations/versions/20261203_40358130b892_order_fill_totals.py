"""order fill totals

An order row keeps what its fills came to, as CCXT's order structure carries
it: the quote value of its fills (``cost_quote``, for ``cost`` and
``average``), the fees its side paid (``fee_quote``) and when its last fill
happened (``last_trade_at``, for ``lastTradeTimestamp``). The upgrade sums
the fills already recorded.

Revision ID: 40358130b892
Revises: e2b7c9d41a56
Create Date: 2026-12-03 03:00:00.000000+00:00
"""

from collections.abc import Sequence
from datetime import datetime

import sqlalchemy as sa
from alembic import op

revision: str = "40358130b892"
down_revision: str | None = "e2b7c9d41a56"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 10_000


def upgrade() -> None:
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.add_column(sa.Column("cost_quote", sa.String(length=78), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("fee_quote", sa.String(length=78), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("last_trade_at", sa.DateTime(timezone=True), nullable=True))
    _backfill()
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.alter_column("cost_quote", server_default=None)
        batch_op.alter_column("fee_quote", server_default=None)


def _backfill() -> None:
    """Sum each order's fills: both get the quote, the buyer's the buyer fee, the seller's the seller fee."""
    fills = sa.table(
        "trading_fills",
        *(sa.column(name, sa.BigInteger) for name in ("id", "maker_order_id", "taker_order_id")),
        *(sa.column(name, sa.String) for name in ("taker_side", "quote_amount", "buyer_fee", "seller_fee")),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    orders = sa.table(
        "trading_orders",
        sa.column("id", sa.BigInteger),
        *(sa.column(name, sa.String) for name in ("cost_quote", "fee_quote")),
        sa.column("last_trade_at", sa.DateTime(timezone=True)),
    )
    connection = op.get_bind()
    cost: dict[int, int] = {}
    fee: dict[int, int] = {}
    last: dict[int, datetime] = {}
    after = 0
    while rows := connection.execute(
        sa.select(fills).where(fills.c.id > after).order_by(fills.c.id).limit(_CHUNK)
    ).all():
        after = rows[-1].id
        for fill in rows:
            taker_buys = fill.taker_side == "buy"
            for order_id, buys in ((fill.taker_order_id, taker_buys), (fill.maker_order_id, not taker_buys)):
                cost[order_id] = cost.get(order_id, 0) + int(fill.quote_amount)
                fee[order_id] = fee.get(order_id, 0) + int(fill.buyer_fee if buys else fill.seller_fee)
                if order_id not in last or fill.created_at > last[order_id]:
                    last[order_id] = fill.created_at
    update = (
        orders.update()
        .where(orders.c.id == sa.bindparam("order_id"))
        .values(
            cost_quote=sa.bindparam("cost"), fee_quote=sa.bindparam("fee"), last_trade_at=sa.bindparam("last")
        )
    )
    values = [
        {"order_id": order_id, "cost": str(cost[order_id]), "fee": str(fee[order_id]), "last": last[order_id]}
        for order_id in cost
    ]
    for start in range(0, len(values), _CHUNK):
        connection.execute(update, values[start : start + _CHUNK])


def downgrade() -> None:
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.drop_column("last_trade_at")
        batch_op.drop_column("fee_quote")
        batch_op.drop_column("cost_quote")
