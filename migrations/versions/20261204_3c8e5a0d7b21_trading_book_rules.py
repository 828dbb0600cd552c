"""a market's rules recorded from its first start, and where they last changed

A market's rules (tick, lot, minimum, tokens) were recorded only in its first
checkpoint, written at a clean stop or every ``checkpoint_every`` commands. A
market that crashed before either had none, and its next start replayed the
journal under whatever rules it was given: a coarser tick silently moved resting
orders' prices. A market's first start now records its rules in a checkpoint of
its empty book, and a start whose rules differ is refused while orders rest, or
records the new rules when none do. ``rules_sequence`` is the journal head at
which they last changed and ``rules_snapshot`` the empty book then (its rules,
and how far its order and trade ids had got); a full replay (the check of a
checkpoint) starts there.
Rows written before keep 0: their journal is replayed from its start, as before.

Revision ID: 3c8e5a0d7b21
Revises: f6da529a477d
Create Date: 2026-12-04 20:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3c8e5a0d7b21"
down_revision: str | None = "f6da529a477d"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("trading_books", schema=None) as batch_op:
        batch_op.add_column(sa.Column("rules_sequence", sa.BigInteger(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("rules_snapshot", sa.LargeBinary(), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_trading_books_rules_not_after_checkpoint"), "rules_sequence <= checkpoint_sequence"
        )


def downgrade() -> None:
    with op.batch_alter_table("trading_books", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_trading_books_rules_not_after_checkpoint"), type_="check")
        batch_op.drop_column("rules_snapshot")
        batch_op.drop_column("rules_sequence")
