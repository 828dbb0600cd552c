"""pool fund receipts from the vault

The Vault pays trading fees to the Fund by plain transfer (its ``FeesCollected``
event), not through ``Fund.deposit``: ``pool_fund_deposits.event`` says which
event a receipt was indexed from. Existing rows came from ``FundDeposit``.

Revision ID: 482ca70abf99
Revises: 8c1b83a131ee
Create Date: 2026-11-22 00:36:12.531669+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "482ca70abf99"
down_revision: str | None = "8c1b83a131ee"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("pool_fund_deposits", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("event", sa.String(length=32), server_default="FundDeposit", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_pool_fund_deposits_event_known"), "event IN ('FundDeposit', 'FeesCollected')"
        )


def downgrade() -> None:
    with op.batch_alter_table("pool_fund_deposits", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_pool_fund_deposits_event_known"), type_="check")
        batch_op.drop_column("event")
