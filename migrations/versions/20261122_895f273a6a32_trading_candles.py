"""trading candles

OHLCV candles per market at one minute, one hour and one day, kept by the
market's writer with its fills. The upgrade builds them from the fills already
recorded, so the history starts with the first trade.

Revision ID: 895f273a6a32
Revises: 482ca70abf99
Create Date: 2026-11-22 02:38:34.383841+00:00
"""

from collections.abc import Sequence
from datetime import UTC

import sqlalchemy as sa
from alembic import op

from exchange.trading.candles import STORED, trade_candles

revision: str = "895f273a6a32"
down_revision: str | None = "482ca70abf99"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "trading_candles",
        sa.Column("market_id", sa.String(length=32), nullable=False),
        sa.Column("resolution_s", sa.Integer(), nullable=False),
        sa.Column("start_unix", sa.BigInteger(), nullable=False),
        sa.Column("open", sa.String(length=78), nullable=False),
        sa.Column("high", sa.String(length=78), nullable=False),
        sa.Column("low", sa.String(length=78), nullable=False),
        sa.Column("close", sa.String(length=78), nullable=False),
        sa.Column("volume", sa.String(length=78), nullable=False),
        sa.Column("quote_volume", sa.String(length=78), nullable=False),
        sa.Column("trades", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "resolution_s IN (60, 3600, 86400)", name=op.f("ck_trading_candles_resolution_stored")
        ),
        sa.CheckConstraint("trades > 0", name=op.f("ck_trading_candles_has_trades")),
        sa.PrimaryKeyConstraint("market_id", "resolution_s", "start_unix", name=op.f("pk_trading_candles")),
    )
    _backfill()


def _backfill() -> None:
    fills = sa.table(
        "trading_fills",
        sa.column("id", sa.BigInteger),
        sa.column("market_id", sa.String),
        sa.column("price_quote", sa.String),
        sa.column("amount_base", sa.String),
        sa.column("quote_amount", sa.String),
        sa.column("created_at", sa.DateTime(timezone=True)),
    )
    candles = sa.table(
        "trading_candles",
        *(sa.column(name) for name in ("market_id", "resolution_s", "start_unix", "trades", "updated_at")),
        *(sa.column(name) for name in ("open", "high", "low", "close", "volume", "quote_volume")),
    )
    connection = op.get_bind()
    rows = connection.execute(sa.select(fills).order_by(fills.c.market_id, fills.c.id)).all()
    by_market: dict[str, list[tuple[int, int, int, int]]] = {}
    now = None
    for row in rows:
        created = row.created_at if row.created_at.tzinfo else row.created_at.replace(tzinfo=UTC)
        trade = (int(created.timestamp()), int(row.price_quote), int(row.amount_base), int(row.quote_amount))
        by_market.setdefault(row.market_id, []).append(trade)
        now = created if now is None or created > now else now
    values = [
        {
            "market_id": market_id,
            "resolution_s": resolution,
            "start_unix": candle.start,
            "trades": candle.trades,
            "updated_at": now,
            **{name: str(getattr(candle, name)) for name in ("open", "high", "low", "close", "volume")},
            "quote_volume": str(candle.quote_volume),
        }
        for market_id, trades in by_market.items()
        for resolution in STORED
        for candle in trade_candles(resolution, trades).values()
    ]
    if values:
        op.bulk_insert(candles, values)


def downgrade() -> None:
    op.drop_table("trading_candles")
