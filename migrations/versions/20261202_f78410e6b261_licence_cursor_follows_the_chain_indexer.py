"""licence cursor follows the chain indexer

The device-licence indexer runs on the chain indexer (``chain_cursors``, ``chain_blocks``,
``chain_events``), which undoes reorganisations. ``licence_indexer_cursors`` now names, per
registry, the chain cursor whose credited block the resolver's answers are at (``cursor_id``).

The old rows cannot become chain cursors (those remember block hashes), so each keeps its block
as ``resume_block`` and no cursor yet: until the indexer's first pass links one, the resolver
answers at that block, with the state the old indexer left, as before the upgrade. The first
pass starts a new chain cursor at ``resume_block`` (``repository.follow_cursor``) rather than
reading the registry's history again from its deployment block. A downgrade keeps each
registry's block: the credited one, or the one it was to resume from.

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


def _rows(query: str) -> list[dict[str, object]]:
    statement = sa.text(query).columns(updated_at=sa.DateTime(timezone=True))
    return [dict(row._mapping) for row in op.get_bind().execute(statement)]


def upgrade() -> None:
    rows = _rows(
        "SELECT chain_id, registry_address, block AS resume_block, updated_at FROM licence_indexer_cursors"
    )
    op.drop_table(_TABLE)
    table = op.create_table(
        _TABLE,
        sa.Column("chain_id", sa.BigInteger(), nullable=False),
        sa.Column("registry_address", sa.String(length=42), nullable=False),
        sa.Column("cursor_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("resume_block", sa.BigInteger(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "cursor_id IS NOT NULL OR resume_block IS NOT NULL",
            name=op.f("ck_licence_indexer_cursors_follows_or_resumes"),
        ),
        sa.ForeignKeyConstraint(
            ["cursor_id"],
            ["chain_cursors.id"],
            name=op.f("fk_licence_indexer_cursors_cursor_id_chain_cursors"),
        ),
        sa.PrimaryKeyConstraint("chain_id", "registry_address", name=op.f("pk_licence_indexer_cursors")),
    )
    if rows:
        op.bulk_insert(table, rows)


def downgrade() -> None:
    rows = _rows(
        "SELECT c.chain_id, c.registry_address, COALESCE(k.credited_block, c.resume_block) AS block,"
        " COALESCE(k.updated_at, c.updated_at) AS updated_at"
        " FROM licence_indexer_cursors AS c LEFT JOIN chain_cursors AS k ON k.id = c.cursor_id"
    )
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
