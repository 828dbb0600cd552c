"""create chain deployments

The contract deployments the service made or loaded, one row per distinct manifest.

Revision ID: b0c18980f29e
Revises:
Create Date: 2026-11-21 23:32:13.675664+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b0c18980f29e"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "chain_deployments",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("deploy_block", sa.BigInteger(), nullable=False),
        sa.Column("manifest", sa.JSON(), nullable=False),
        sa.Column("manifest_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("chain_id > 0", name=op.f("ck_chain_deployments_chain_id_positive")),
        sa.CheckConstraint("deploy_block >= 0", name=op.f("ck_chain_deployments_deploy_block_not_negative")),
        sa.CheckConstraint(
            "length(manifest_sha256) = 64", name=op.f("ck_chain_deployments_manifest_sha256_length")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_chain_deployments")),
        sa.UniqueConstraint("manifest_sha256", name=op.f("uq_chain_deployments_manifest_sha256")),
    )
    with op.batch_alter_table("chain_deployments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_chain_deployments_chain_id_deploy_block"),
            ["chain_id", "deploy_block"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("chain_deployments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_chain_deployments_chain_id_deploy_block"))
    op.drop_table("chain_deployments")
