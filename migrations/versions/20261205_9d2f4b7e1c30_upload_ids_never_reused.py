"""upload ids never reused on SQLite

A device upload's id is how its manufacturer names it (the routes, the export
command, logs). SQLite gives a table without AUTOINCREMENT the highest rowid
plus one, so the id of the newest upload, once withdrawn or expired, came back
as the next upload's, another manufacturer's perhaps. The table is copied with
AUTOINCREMENT, after which an id is never given twice. PostgreSQL's sequence
never gave one twice: nothing to do there.

Revision ID: 9d2f4b7e1c30
Revises: a5c7e2f94d18
Create Date: 2026-12-05 06:30:00.000000+00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "9d2f4b7e1c30"
down_revision: str | None = "a5c7e2f94d18"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _copy(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "licence_device_batches", recreate="always", table_kwargs={"sqlite_autoincrement": autoincrement}
    ):
        pass


def upgrade() -> None:
    _copy(True)


def downgrade() -> None:
    _copy(False)
