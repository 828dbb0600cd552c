"""order signatures of contract wallets

Orders of contract wallets (ERC-1271) carry whatever signature the wallet's
isValidSignature reads, up to 2,048 bytes; a key's signature is 65. The column
held 66 bytes of hex. Widening a VARCHAR is a change of the catalogue alone on
PostgreSQL; SQLite copies the table (it enforces no length either way).

Revision ID: 8914e33b61ff
Revises: 27a0ba19fc21
Create Date: 2026-12-04 03:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8914e33b61ff"
down_revision: str | None = "27a0ba19fc21"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_KEY = sa.String(length=134)
_WALLET = sa.String(length=2 + 2 * 2048)


def upgrade() -> None:
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.alter_column("signature", existing_type=_KEY, type_=_WALLET, existing_nullable=False)


def downgrade() -> None:
    # Refused (value too long) on PostgreSQL while an order of a wallet with a long signature is kept.
    with op.batch_alter_table("trading_orders", schema=None) as batch_op:
        batch_op.alter_column("signature", existing_type=_WALLET, type_=_KEY, existing_nullable=False)
