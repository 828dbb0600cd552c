"""chain anchor

The chain a database belongs to: its id, and the number and hash of the block the
pool was deployed in. A service refuses to start on another chain.

Revision ID: 9d4f2a6c1e83
Revises: 7b3e5d9c2a14
Create Date: 2026-12-03 13:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "9d4f2a6c1e83"
down_revision: str | None = "7b3e5d9c2a14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_anchor",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("deploy_block", sa.BigInteger(), nullable=False),
        sa.Column("block_hash", sa.String(length=66), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_chain_anchor_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_anchor")),
    )


def downgrade() -> None:
    op.drop_table("chain_anchor")
