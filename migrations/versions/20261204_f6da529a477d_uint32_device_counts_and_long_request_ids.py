"""uint32 device counts and indexes, request ids of 128 characters

DeviceLicenses takes batches of up to 2**32 - 1 devices (a uint32), whose
indexes run below that. INTEGER holds 2**31 - 1 on PostgreSQL, so the licence
indexer could not even look for an upload matching the registration of a
larger batch made without this service, nor for the device of a revocation at
an index past it: the pass failed, and every pass after it. A batch's device
count and a device's index are BIGINT. PostgreSQL rewrites both tables and
their indexes, holding an exclusive lock on them meanwhile; SQLite copies them
(its INTEGER holds 64 bits either way).

The audit log's request id holds the 128 characters an X-Request-ID may have:
an admin action sent with a longer id than 64 failed on PostgreSQL. Widening a
VARCHAR is a change of the catalogue alone there; SQLite copies ``audit_log``,
which drops its append-only triggers with the old table, so they are dropped
first and created again on the copy, in both directions.

Revision ID: f6da529a477d
Revises: b6e1d3a70c52
Create Date: 2026-12-04 15:00:00.000000+00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "f6da529a477d"
down_revision: str | None = "b6e1d3a70c52"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

APPEND_ONLY_MESSAGE = "audit_log is append-only"  # as revision f7df11793aa3 installed it

_SHORT_REQUEST_ID = sa.String(length=64)
_LONG_REQUEST_ID = sa.String(length=128)


def _counts(existing: sa.types.TypeEngine[int], wanted: sa.types.TypeEngine[int]) -> None:
    with op.batch_alter_table("licence_device_batches", schema=None) as batch_op:
        batch_op.alter_column("device_count", existing_type=existing, type_=wanted, existing_nullable=False)
    with op.batch_alter_table("licence_devices", schema=None) as batch_op:
        batch_op.alter_column("device_index", existing_type=existing, type_=wanted, existing_nullable=False)


def _request_ids(existing: sa.String, wanted: sa.String) -> None:
    rebuilt = op.get_bind().dialect.name == "sqlite"  # PostgreSQL alters the table in place
    if rebuilt:
        for operation in ("update", "delete"):
            op.execute(f"DROP TRIGGER audit_log_no_{operation}")
    with op.batch_alter_table("audit_log", schema=None) as batch_op:
        batch_op.alter_column("request_id", existing_type=existing, type_=wanted, existing_nullable=True)
    if rebuilt:
        for operation in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_log_no_{operation.lower()} BEFORE {operation} ON audit_log "
                f"BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"
            )


def upgrade() -> None:
    _counts(sa.Integer(), sa.BigInteger())
    _request_ids(_SHORT_REQUEST_ID, _LONG_REQUEST_ID)


def downgrade() -> None:
    # Refused (value too long) on PostgreSQL once an entry has a longer request id: the log is
    # append-only, so such an entry cannot be shortened. Counts and indexes come from uploads,
    # which hold far fewer devices than INTEGER counts.
    _request_ids(_LONG_REQUEST_ID, _SHORT_REQUEST_ID)
    _counts(sa.BigInteger(), sa.Integer())
