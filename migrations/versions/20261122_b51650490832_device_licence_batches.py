"""device licence batches, trees, devices and the indexer cursor

Revision ID: b51650490832
Revises: 2f6a0b2a3cd7
Create Date: 2026-11-22 00:09:04.631547+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "b51650490832"
down_revision: str | None = "2f6a0b2a3cd7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "licence_device_batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry_address", sa.String(length=42), nullable=False),
        sa.Column("manufacturer", sa.String(length=42), nullable=False),
        sa.Column("root", sa.String(length=66), nullable=False),
        sa.Column("device_count", sa.Integer(), nullable=False),
        sa.Column("bpc_per_device_wei", sa.String(length=78), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("registered_block", sa.BigInteger(), nullable=True),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("confirmed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(status = 'pending') = (batch_id IS NULL AND registered_block IS NULL)",
            name=op.f("ck_licence_device_batches_confirmed_has_id"),
        ),
        sa.CheckConstraint(
            "status IN ('pending', 'confirmed')", name=op.f("ck_licence_device_batches_status_known")
        ),
        sa.CheckConstraint("device_count > 0", name=op.f("ck_licence_device_batches_device_count_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_licence_device_batches")),
        sa.UniqueConstraint(
            "chain_id",
            "registry_address",
            "batch_id",
            name=op.f("uq_licence_device_batches_chain_id_registry_address_batch_id"),
        ),
    )
    with op.batch_alter_table("licence_device_batches", schema=None) as batch_op:
        batch_op.create_index(
            "ix_licence_device_batches_upload_match",
            ["chain_id", "registry_address", "manufacturer", "root"],
            unique=False,
        )

    op.create_table(
        "licence_indexer_cursors",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry_address", sa.String(length=42), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "registry_address", name=op.f("pk_licence_indexer_cursors")),
    )
    op.create_table(
        "licence_batch_trees",
        sa.Column("batch_pk", sa.Integer(), nullable=False),
        sa.Column("tree", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_pk"],
            ["licence_device_batches.id"],
            name=op.f("fk_licence_batch_trees_batch_pk_licence_device_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_pk", name=op.f("pk_licence_batch_trees")),
    )
    op.create_table(
        "licence_devices",
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry_address", sa.String(length=42), nullable=False),
        sa.Column("device_id", sa.String(length=220), nullable=False),
        sa.Column("batch_pk", sa.Integer(), nullable=False),
        sa.Column("device_index", sa.Integer(), nullable=False),
        sa.Column("revoked_block", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_pk"],
            ["licence_device_batches.id"],
            name=op.f("fk_licence_devices_batch_pk_licence_device_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("chain_id", "registry_address", "device_id", name=op.f("pk_licence_devices")),
        sa.UniqueConstraint(
            "batch_pk", "device_index", name=op.f("uq_licence_devices_batch_pk_device_index")
        ),
    )


def downgrade() -> None:
    op.drop_table("licence_devices")
    op.drop_table("licence_batch_trees")
    op.drop_table("licence_indexer_cursors")
    with op.batch_alter_table("licence_device_batches", schema=None) as batch_op:
        batch_op.drop_index("ix_licence_device_batches_upload_match")
    op.drop_table("licence_device_batches")
