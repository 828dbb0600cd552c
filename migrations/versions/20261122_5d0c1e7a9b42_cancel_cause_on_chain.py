"""cancel cause on_chain

Orders the maker cancelled in the Vault itself (``OrderCancelled``,
``NonceCancelled``) or whose maker asked to exit (``ExitRequested``) leave the
book with the cause ``on_chain``.

Revision ID: 5d0c1e7a9b42
Revises: 895f273a6a32
Create Date: 2026-11-22 04:00:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "5d0c1e7a9b42"
down_revision: str | None = "895f273a6a32"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = "cause IN ('user', 'ioc_remainder', 'self_trade', 'expired', 'suspended')"
_AFTER = "cause IN ('user', 'ioc_remainder', 'self_trade', 'expired', 'suspended', 'on_chain')"


def _constraint(condition: str) -> None:
    with op.batch_alter_table("trading_cancels", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_trading_cancels_cause_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_trading_cancels_cause_known"), condition)


def upgrade() -> None:
    _constraint(_AFTER)


def downgrade() -> None:
    op.execute("UPDATE trading_orders SET cancel_cause = 'user' WHERE cancel_cause = 'on_chain'")
    op.execute("UPDATE trading_cancels SET cause = 'user' WHERE cause = 'on_chain'")
    _constraint(_BEFORE)
