"""Tables of per-device licensing: uploaded batches, their trees, their devices, and the indexer's cursor.

A batch belongs to one registry (the ``DeviceLicenses`` contract at ``registry`` on ``chain_id``);
everything below is scoped by it, so a database that outlives an embedded chain (which deploys a
new pool at every start) never mixes the devices of two registries.

* ``licence_device_batches`` — one row per uploaded batch. Written by the upload service
  (``status = 'pending'``) and then only by the indexer, which confirms it when the chain's
  ``BatchRegistered`` event names its manufacturer, root and device count, and follows its
  top-ups and suspensions; a reorganisation that takes the registration away makes it pending
  again. Only confirmed batches resolve.
* ``licence_batch_trees`` — the serialised Merkle tree (``MerkleTree.to_bytes``) of a batch, apart
  from the batch row so that listing batches never reads the blobs.
* ``licence_devices`` — one row per device, keyed by ``(chain_id, registry, device_id)`` with the
  canonical id: the resolver's single lookup. ``revoked_block`` is set by the indexer from
  ``DeviceRevoked``. A device id is in at most one batch per registry.
* ``licence_indexer_cursors`` — per registry, the chain indexer's cursor (``chain_cursors``,
  ``exchange.trading.indexer``) that follows it. That cursor's credited block is the block every
  answer of the resolver names: the events up to it are applied, in the same transactions that
  move it (and undone in the ones that move it back after a reorganisation). A row carried over
  from the indexer's own cursor of earlier versions has no chain cursor yet but the block that
  indexer had applied (``resume_block``): answers name it until the first pass links a cursor,
  which then starts from there.

Amounts (uint128 BPC per device) are decimal text: SQLite has no exact 128-bit type. Device
counts and indexes are BIGINT: they are uint32 on chain, and the indexer looks up uploads and
devices by the count and index of every event, batches registered without this service included,
beyond the 2**31 - 1 of PostgreSQL's INTEGER.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.db.base import Base, utc_now

ADDRESS = String(42)
HASH_HEX = String(66)
BATCH_PENDING = "pending"
BATCH_CONFIRMED = "confirmed"


class DeviceBatch(Base):
    """A batch a manufacturer uploaded; confirmed once the chain registered its root."""

    __tablename__ = "licence_device_batches"
    __table_args__ = (
        CheckConstraint("status IN ('pending', 'confirmed')", name="status_known"),
        CheckConstraint("device_count > 0", name="device_count_positive"),
        CheckConstraint(
            "(status = 'pending') = (batch_id IS NULL AND registered_block IS NULL)", name="confirmed_has_id"
        ),
        UniqueConstraint("chain_id", "registry_address", "batch_id"),
        # Explicit name: the generated one would pass PostgreSQL's 63-character limit.
        Index(
            "ix_licence_device_batches_upload_match", "chain_id", "registry_address", "manufacturer", "root"
        ),
        # An upload's id is its name to the manufacturer (and in logs and exports): one withdrawn
        # or expired must not come back as another's, as SQLite's rowid would give it again.
        {"sqlite_autoincrement": True},
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    registry_address: Mapped[str] = mapped_column(ADDRESS)
    manufacturer: Mapped[str] = mapped_column(ADDRESS)
    root: Mapped[str] = mapped_column(HASH_HEX)
    # Uploads hold far fewer, but a batch registered without them may count up to 2**32 - 1 devices.
    device_count: Mapped[int] = mapped_column(BigInteger)
    bpc_per_device_wei: Mapped[str] = mapped_column(String(78))
    status: Mapped[str] = mapped_column(String(16), default=BATCH_PENDING)
    batch_id: Mapped[int | None] = mapped_column(BigInteger, default=None)
    registered_block: Mapped[int | None] = mapped_column(BigInteger, default=None)
    suspended: Mapped[bool] = mapped_column(default=False)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    confirmed_at: Mapped[datetime | None] = mapped_column(default=None)


class BatchTree(Base):
    """The serialised Merkle tree of a batch: every proof is served from it."""

    __tablename__ = "licence_batch_trees"

    batch_pk: Mapped[int] = mapped_column(
        ForeignKey("licence_device_batches.id", ondelete="CASCADE"), primary_key=True
    )
    tree: Mapped[bytes] = mapped_column(LargeBinary)


class Device(Base):
    """One device of a batch, by its canonical id."""

    __tablename__ = "licence_devices"
    __table_args__ = (UniqueConstraint("batch_pk", "device_index"),)

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    registry_address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(220), primary_key=True)
    batch_pk: Mapped[int] = mapped_column(ForeignKey("licence_device_batches.id", ondelete="CASCADE"))
    device_index: Mapped[int] = mapped_column(BigInteger)  # below a uint32 device count
    revoked_block: Mapped[int | None] = mapped_column(BigInteger, default=None)


class IndexerCursor(Base):
    """The chain indexer's cursor that follows a registry (the current chain's, after a reset),
    or, before the first pass after the upgrade, the block the earlier indexer had applied."""

    __tablename__ = "licence_indexer_cursors"
    __table_args__ = (
        CheckConstraint("cursor_id IS NOT NULL OR resume_block IS NOT NULL", name="follows_or_resumes"),
    )

    chain_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    registry_address: Mapped[str] = mapped_column(ADDRESS, primary_key=True)
    cursor_id: Mapped[int | None] = mapped_column(ForeignKey("chain_cursors.id"), default=None)
    resume_block: Mapped[int | None] = mapped_column(BigInteger, default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)
