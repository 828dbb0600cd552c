"""ledger (cause, reference) index without the market writer's entries

A market writer posts a few ledger entries per order (an order's reservation and
release, a fill's movements), most of the ledger, and nothing looks them up by
cause and reference. The index now leaves them out: one index fewer to write in
every cycle of a market.

Revision ID: 3b8e5f0c7a21
Revises: 9d2f4b7e1c30
Create Date: 2026-12-05 12:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3b8e5f0c7a21"
down_revision: str | None = "9d2f4b7e1c30"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_INDEX = "ix_ledger_entries_cause_reference"
_LOOKED_UP = "cause NOT IN ('order.reserve', 'order.release', 'fill')"


def upgrade() -> None:
    op.drop_index(_INDEX, table_name="ledger_entries")
    op.create_index(
        _INDEX,
        "ledger_entries",
        ["cause", "reference"],
        postgresql_where=sa.text(_LOOKED_UP),
        sqlite_where=sa.text(_LOOKED_UP),
    )


def downgrade() -> None:
    op.drop_index(_INDEX, table_name="ledger_entries")
    op.create_index(_INDEX, "ledger_entries", ["cause", "reference"])
