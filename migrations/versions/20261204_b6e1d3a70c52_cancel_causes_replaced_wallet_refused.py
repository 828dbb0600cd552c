"""cancel causes replaced and wallet_refused

An order replaced through POST /v1/orders/{id}/replace leaves the book with the
cause ``replaced`` (it was ``user``). A contract wallet's order whose signature
the wallet no longer accepts when a fill of it settles is cancelled with the
cause ``wallet_refused`` (it was ``on_chain``, which otherwise means the maker
cancelled it in the Vault).

Revision ID: b6e1d3a70c52
Revises: 8914e33b61ff
Create Date: 2026-12-04 09:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b6e1d3a70c52"
down_revision: str | None = "8914e33b61ff"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BEFORE = (
    "cause IN ('user', 'ioc_remainder', 'self_trade', 'expired', 'suspended', 'on_chain', 'fee_above_cap')"
)
_AFTER = (
    "cause IN ('user', 'ioc_remainder', 'self_trade', 'expired', 'suspended', 'on_chain', "
    "'fee_above_cap', 'replaced', 'wallet_refused')"
)
_EARLIER = {"replaced": "user", "wallet_refused": "on_chain"}  # what each was recorded as before


def _constraint(condition: str) -> None:
    with op.batch_alter_table("trading_cancels", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_trading_cancels_cause_known"), type_="check")
        batch_op.create_check_constraint(op.f("ck_trading_cancels_cause_known"), condition)


def upgrade() -> None:
    _constraint(_AFTER)


def downgrade() -> None:
    for cause, earlier in _EARLIER.items():
        for table, column in (("trading_orders", "cancel_cause"), ("trading_cancels", "cause")):
            statement = f"UPDATE {table} SET {column} = :earlier WHERE {column} = :cause"  # noqa: S608
            op.execute(sa.text(statement).bindparams(earlier=earlier, cause=cause))
    _constraint(_BEFORE)
