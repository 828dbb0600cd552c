"""licence cursor follows the chain indexer

The device-licence indexer runs on the chain indexer (``chain_cursors``, ``chain_blocks``,
``chain_events``), which undoes reorganisations. ``licence_indexer_cursors`` no longer holds a
block of its own: it names, per registry, the chain cursor whose credited block the resolver's
answers are at. The old blocks cannot become chain cursors (those remember block hashes), so
the rows go: the indexer reads the registry's events again from its deployment block, which
leaves confirmed batches, top-ups, revocations and suspensions as they are. A downgrade keeps
each registry's credited block.

Revision ID: f78410e6b261
Revises: 3e8f1c2a7b55
Create Date: 2026-12-02 06:30:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f78410e6b261"
down_revision: str | None = "3e8f1c2a7b55"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "licence_indexer_cursors"


def upgrade() -> None:
    op.drop_table(_TABLE)
    op.create_table(
        _TABLE,
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry_address", sa.String(length=42), nullable=False),
        sa.Column("cursor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cursor_id"],
            ["chain_cursors.id"],
            name=op.f("fk_licence_indexer_cursors_cursor_id_chain_cursors"),
        ),
        sa.PrimaryKeyConstraint("chain_id", "registry_address", name=op.f("pk_licence_indexer_cursors")),
    )


def downgrade() -> None:
    rows = [
        dict(row._mapping)
        for row in op.get_bind().execute(
            sa.text(
                "SELECT c.chain_id, c.registry_address, k.credited_block AS block, k.updated_at"
                " FROM licence_indexer_cursors AS c JOIN chain_cursors AS k ON k.id = c.cursor_id"
            ).columns(updated_at=sa.DateTime(timezone=True))
        )
    ]
    op.drop_table(_TABLE)
    table = op.create_table(
        _TABLE,
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry_address", sa.String(length=42), nullable=False),
        sa.Column("block", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("chain_id", "registry_address", name=op.f("pk_licence_indexer_cursors")),
    )
    if rows:
        op.bulk_insert(table, rows)
