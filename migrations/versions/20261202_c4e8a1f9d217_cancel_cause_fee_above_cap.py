"""cancel cause fee_above_cap

A resting order whose signed fee cap is below the market's maker fee (the fee
was raised while it rested) leaves the book at start-up with the cause
``fee_above_cap``: no fill of it could settle.

Revision ID: c4e8a1f9d217
Revises: 9a4d2c6e1f30
Create Date: 2026-12-02 19:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "c4e8a1f9d217"
down_revision: str | None = "9a4d2c6e1f30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "cause IN ('user', 'ioc_remainder', 'self_trade', 'expired', 'suspended', 'on_chain')"
_AFTER = (
    "cause IN ('user', 'ioc_remainder', 'self_trade', 'expired', 'suspended', 'on_chain', 'fee_above_cap')"
)


def _constraint(condition: str) -> None:
    with op.batch_alter_table("trading_cancels", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_trading_cancels_cause_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_trading_cancels_cause_known"), condition)


def upgrade() -> None:
    _constraint(_AFTER)


def downgrade() -> None:
    op.execute("UPDATE trading_orders SET cancel_cause = 'user' WHERE cancel_cause = 'fee_above_cap'")
    op.execute("UPDATE trading_cancels SET cause = 'user' WHERE cause = 'fee_above_cap'")
    _constraint(_BEFORE)
