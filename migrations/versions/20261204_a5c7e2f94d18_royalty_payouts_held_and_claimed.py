"""royalty payouts held and claimed

The Fund no longer reverts a payout batch for a recipient the token refuses: it
holds that payout for the recipient (``FundPayoutHeld``), who claims it later
(``FundClaimed``). Each royalty payout now records how it stands on chain:
``pending`` until its batch is mined, then ``paid`` or ``held``, and ``claimed``
once the recipient took what was held; with the transaction, the position of its
event and the claim. ``pool_fund_claims`` holds the indexed ``FundClaimed`` events.
Payouts of batches already paid were delivered (the Fund reverted a batch for any
refusal), so they become ``paid`` with their batch's transaction.

Revision ID: a5c7e2f94d18
Revises: 3c8e5a0d7b21
Create Date: 2026-12-04 22:10:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "a5c7e2f94d18"
down_revision: str | None = "3c8e5a0d7b21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "pool_fund_claims",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token", sa.String(length=42), nullable=False),
        sa.Column("recipient", sa.String(length=42), nullable=False),
        sa.Column("paid_to", sa.String(length=42), nullable=False),
        sa.Column("amount_wei", sa.String(length=78), nullable=False),
        sa.Column("block_number", sa.BigInteger(), nullable=False),
        sa.Column("block_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("tx_hash", sa.String(length=66), nullable=False),
        sa.Column("log_index", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_pool_fund_claims")),
        sa.UniqueConstraint("tx_hash", "log_index", name=op.f("uq_pool_fund_claims_tx_hash_log_index")),
    )
    with op.batch_alter_table("pool_fund_claims", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_pool_fund_claims_token_recipient"), ["token", "recipient"], unique=False
        )

    with op.batch_alter_table("pool_royalty_payouts", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), server_default="pending", nullable=False)
        )
        batch_op.add_column(sa.Column("tx_hash", sa.String(length=66), nullable=True))
        batch_op.add_column(sa.Column("block_number", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("log_index", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("claim_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            batch_op.f("fk_pool_royalty_payouts_claim_id_pool_fund_claims"),
            "pool_fund_claims",
            ["claim_id"],
            ["id"],
        )
        batch_op.create_check_constraint(
            batch_op.f("ck_pool_royalty_payouts_status_known"),
            "status IN ('pending', 'paid', 'held', 'claimed')",
        )
        batch_op.create_index(
            batch_op.f("ix_pool_royalty_payouts_contributor_status"), ["contributor", "status"], unique=False
        )
    op.execute(
        "UPDATE pool_royalty_payouts SET status = 'paid', tx_hash = ("
        "SELECT b.tx_hash FROM pool_royalty_payout_batches b WHERE b.id = pool_royalty_payouts.batch_id) "
        "WHERE batch_id IN (SELECT id FROM pool_royalty_payout_batches WHERE status = 'paid')"
    )


def downgrade() -> None:
    with op.batch_alter_table("pool_royalty_payouts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_royalty_payouts_contributor_status"))
        batch_op.drop_constraint(batch_op.f("ck_pool_royalty_payouts_status_known"), type_="check")
        batch_op.drop_constraint(
            batch_op.f("fk_pool_royalty_payouts_claim_id_pool_fund_claims"), type_="foreignkey"
        )
        batch_op.drop_column("claim_id")
        batch_op.drop_column("log_index")
        batch_op.drop_column("block_number")
        batch_op.drop_column("tx_hash")
        batch_op.drop_column("status")
    with op.batch_alter_table("pool_fund_claims", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_pool_fund_claims_token_recipient"))
    op.drop_table("pool_fund_claims")
