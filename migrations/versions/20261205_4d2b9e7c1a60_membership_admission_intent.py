"""membership applications: the admission an approval set out to send

An approval admits the wallet on the PoolRegistry with no database transaction open
while the transaction is sent and mined. ``admitting_since`` records, before the
send, that an approval set out to admit the wallet: a rejection that read the chain
before the admission was mined sees it when it writes, and refuses instead of
rejecting a wallet about to be a member.

Revision ID: 4d2b9e7c1a60
Revises: a5c7e2f94d18
Create Date: 2026-12-05 01:05:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "4d2b9e7c1a60"
down_revision: str | None = "a5c7e2f94d18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("membership_applications", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admitting_since", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("membership_applications", schema=None) as batch_op:
        batch_op.drop_column("admitting_since")
