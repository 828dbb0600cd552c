"""trading journal and ledger

The order journal (trading_orders, trading_cancels, with a per-market sequence),
each market's journal head and checkpoint (trading_books), fills with their
settlement state, the off-chain ledger (ledger_balances, append-only
ledger_entries), co-signed withdrawals and idempotency keys. Amounts are
uint256 decimal text (String 78; signed deltas String 79).

Revision ID: f03b59a26506
Revises: f7df11793aa3
Create Date: 2026-11-22 00:21:50.892425+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f03b59a26506"
down_revision: str | None = "f7df11793aa3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "ledger_balances",
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("total", sa.String(length=78), nullable=False),
        sa.Column("reserved", sa.String(length=78), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("account", "token", name=op.f("pk_ledger_balances")),
    )
    op.create_table(
        "ledger_entries",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account", sa.String(length=64), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("total_delta", sa.String(length=79), nullable=False),
        sa.Column("reserved_delta", sa.String(length=79), nullable=False),
        sa.Column("cause", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ledger_entries")),
    )
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_account_token_id"), ["account", "token", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ledger_entries_cause_reference"), ["cause", "reference"], unique=False
        )

    op.create_table(
        "trading_books",
        sa.Column("market_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_sequence", sa.BigInteger(), nullable=False),
        sa.Column("checkpoint_state_hash", sa.String(length=64), nullable=True),
        sa.Column("checkpoint_snapshot", sa.LargeBinary(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "checkpoint_sequence <= sequence", name=op.f("ck_trading_books_checkpoint_not_ahead")
        ),
        sa.CheckConstraint("sequence >= 0", name=op.f("ck_trading_books_sequence_not_negative")),
        sa.PrimaryKeyConstraint("market_id", name=op.f("pk_trading_books")),
    )
    op.create_table(
        "trading_cancels",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("market_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(length=42), nullable=False),
        sa.Column("order_sequence", sa.BigInteger(), nullable=True),
        sa.Column("cause", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "cause IN ('user', 'ioc_remainder', 'self_trade', 'expired', 'suspended')",
            name=op.f("ck_trading_cancels_cause_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_cancels")),
        sa.UniqueConstraint("market_id", "sequence", name=op.f("uq_trading_cancels_market_id_sequence")),
    )
    op.create_table(
        "trading_idempotency_keys",
        sa.Column("account", sa.String(length=42), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("account", "key", name=op.f("pk_trading_idempotency_keys")),
    )
    op.create_table(
        "trading_orders",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("market_id", sa.String(length=32), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("account", sa.String(length=42), nullable=False),
        sa.Column("client_order_id", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=4), nullable=False),
        sa.Column("price_quote", sa.String(length=78), nullable=False),
        sa.Column("amount_base", sa.String(length=78), nullable=False),
        sa.Column("max_fee_bps", sa.Integer(), nullable=False),
        sa.Column("nonce", sa.String(length=78), nullable=False),
        sa.Column("expiry_unix", sa.String(length=78), nullable=False),
        sa.Column("order_hash", sa.String(length=66), nullable=False),
        sa.Column("signature", sa.String(length=134), nullable=False),
        sa.Column("time_in_force", sa.String(length=3), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("filled_base", sa.String(length=78), nullable=False),
        sa.Column("remaining_base", sa.String(length=78), nullable=False),
        sa.Column("reserved_token", sa.String(length=42), nullable=False),
        sa.Column("reserved_amount", sa.String(length=78), nullable=False),
        sa.Column("cancel_cause", sa.String(length=16), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("side IN ('buy', 'sell')", name=op.f("ck_trading_orders_side_known")),
        sa.CheckConstraint(
            "status IN ('open', 'closed', 'canceled', 'expired')", name=op.f("ck_trading_orders_status_known")
        ),
        sa.CheckConstraint(
            "time_in_force IN ('GTC', 'IOC', 'FOK', 'PO')", name=op.f("ck_trading_orders_time_in_force_known")
        ),
        sa.CheckConstraint("sequence > 0", name=op.f("ck_trading_orders_sequence_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_orders")),
        sa.UniqueConstraint(
            "account", "client_order_id", name=op.f("uq_trading_orders_account_client_order_id")
        ),
        sa.UniqueConstraint("account", "nonce", name=op.f("uq_trading_orders_account_nonce")),
        sa.UniqueConstraint("market_id", "sequence", name=op.f("uq_trading_orders_market_id_sequence")),
        sa.UniqueConstraint("order_hash", name=op.f("uq_trading_orders_order_hash")),
    )
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trading_orders_account_market_id_id"), ["account", "market_id", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_trading_orders_market_id_status"), ["market_id", "status"], unique=False
        )

    op.create_table(
        "trading_withdrawals",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("account", sa.String(length=42), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("amount", sa.String(length=78), nullable=False),
        sa.Column("nonce", sa.BigInteger(), nullable=False),
        sa.Column("expiry_unix", sa.BigInteger(), nullable=False),
        sa.Column("digest", sa.String(length=66), nullable=False),
        sa.Column("operator_signature", sa.String(length=132), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "status IN ('authorised', 'completed', 'expired')",
            name=op.f("ck_trading_withdrawals_status_known"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_withdrawals")),
        sa.UniqueConstraint("account", "nonce", name=op.f("uq_trading_withdrawals_account_nonce")),
    )
    with op.batch_alter_table("trading_withdrawals", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trading_withdrawals_status_expiry_unix"), ["status", "expiry_unix"], unique=False
        )

    op.create_table(
        "trading_fills",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("market_id", sa.String(length=32), nullable=False),
        sa.Column("trade_id", sa.BigInteger(), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("maker_order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("taker_order_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("maker_account", sa.String(length=42), nullable=False),
        sa.Column("taker_account", sa.String(length=42), nullable=False),
        sa.Column("taker_side", sa.String(length=4), nullable=False),
        sa.Column("price_quote", sa.String(length=78), nullable=False),
        sa.Column("amount_base", sa.String(length=78), nullable=False),
        sa.Column("quote_amount", sa.String(length=78), nullable=False),
        sa.Column("maker_fee_bps", sa.Integer(), nullable=False),
        sa.Column("taker_fee_bps", sa.Integer(), nullable=False),
        sa.Column("buyer_fee", sa.String(length=78), nullable=False),
        sa.Column("seller_fee", sa.String(length=78), nullable=False),
        sa.Column("settlement_state", sa.String(length=16), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("tx_hash", sa.String(length=66), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "settlement_state IN ('pending', 'submitted', 'settled', 'failed')",
            name=op.f("ck_trading_fills_settlement_state_known"),
        ),
        sa.CheckConstraint("taker_side IN ('buy', 'sell')", name=op.f("ck_trading_fills_taker_side_known")),
        sa.ForeignKeyConstraint(
            ["maker_order_id"],
            ["trading_orders.id"],
            name=op.f("fk_trading_fills_maker_order_id_trading_orders"),
        ),
        sa.ForeignKeyConstraint(
            ["taker_order_id"],
            ["trading_orders.id"],
            name=op.f("fk_trading_fills_taker_order_id_trading_orders"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_trading_fills")),
        sa.UniqueConstraint("market_id", "trade_id", name=op.f("uq_trading_fills_market_id_trade_id")),
    )
    with op.batch_alter_table("trading_fills", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_trading_fills_maker_account_id"), ["maker_account", "id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_trading_fills_market_id_id"), ["market_id", "id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_trading_fills_settlement_state_id"), ["settlement_state", "id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_trading_fills_taker_account_id"), ["taker_account", "id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("trading_fills", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trading_fills_taker_account_id"))
        batch_op.drop_index(batch_op.f("ix_trading_fills_settlement_state_id"))
        batch_op.drop_index(batch_op.f("ix_trading_fills_market_id_id"))
        batch_op.drop_index(batch_op.f("ix_trading_fills_maker_account_id"))

    op.drop_table("trading_fills")
    with op.batch_alter_table("trading_withdrawals", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trading_withdrawals_status_expiry_unix"))

    op.drop_table("trading_withdrawals")
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_trading_orders_market_id_status"))
        batch_op.drop_index(batch_op.f("ix_trading_orders_account_market_id_id"))

    op.drop_table("trading_orders")
    op.drop_table("trading_idempotency_keys")
    op.drop_table("trading_cancels")
    op.drop_table("trading_books")
    with op.batch_alter_table("ledger_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ledger_entries_cause_reference"))
        batch_op.drop_index(batch_op.f("ix_ledger_entries_account_token_id"))

    op.drop_table("ledger_entries")
    op.drop_table("ledger_balances")
