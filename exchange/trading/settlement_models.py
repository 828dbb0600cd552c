"""Tables of the chain indexer and the settlement pipeline.

Indexer (``exchange.trading.indexer``)
    ``chain_cursors`` — one per (chain, contract, deployment anchor): the last block
    scanned and the last block whose events are credited. ``chain_blocks`` — the
    hashes of recent blocks the cursor has seen (range ends and blocks with events),
    compared with the chain on every pass to detect reorganisations.
    ``chain_events`` — every decoded log with its block hash, and what became of it:
    ``seen`` (recorded, not yet deep enough), ``credited`` (its effect applied),
    ``orphaned`` (its block left the chain before it was credited), ``reversed``
    (credited, then its block left the chain and the effect was undone), ``refused``
    (its effect could not be applied), ``stranded`` (credited, its block left the
    chain, and the effect could not be undone: the audit shows the difference).

Settlement (``exchange.trading.settlement``)
    ``settlement_batches`` — one ``Vault.settle`` transaction intent: the fills it
    carries (``settlement_batch_fills``), its calldata, operator nonce and gas limit,
    and its outcome. At most one batch per Vault is open (``prepared`` or
    ``submitted``) at any time; a partial unique index enforces it, so a second
    batcher cannot open a batch beside the first. ``settlement_attempts`` — every
    signed transaction of a batch (the first, and each fee-bumped replacement with
    the same nonce), written before it is broadcast. ``settlement_failures`` — why a
    fill will never settle (a decoded Vault custom error, or a local check).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column

from exchange.db.base import Base, utc_now
from exchange.db.types import WeiAmount
from exchange.trading.models import ADDRESS, HASH32


def _in(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(str(value)) for value in values)})"


class EventState(StrEnum):
    SEEN = "seen"
    CREDITED = "credited"
    ORPHANED = "orphaned"
    REVERSED = "reversed"
    REFUSED = "refused"
    STRANDED = "stranded"


class BatchState(StrEnum):
    PREPARED = "prepared"  # intent and first signed transaction stored; maybe not broadcast yet
    SUBMITTED = "submitted"  # a node accepted one of its transactions
    SETTLED = "settled"  # its transaction succeeded and is buried under the confirmations
    REVERTED = "reverted"  # its transaction was mined and reverted: the fills went back to pending
    DROPPED = "dropped"  # its nonce was used by another transaction: the fills went back to pending


OPEN_BATCH_STATES = (BatchState.PREPARED, BatchState.SUBMITTED)
_OPEN_BATCH_PREDICATE = f"state IN ('{BatchState.PREPARED}', '{BatchState.SUBMITTED}')"


class ChainCursor(Base):
    """How far one contract's logs have been read and credited."""

    __tablename__ = "chain_cursors"
    __table_args__ = (
        UniqueConstraint("chain_id", "contract", "anchor_block_hash"),
        CheckConstraint("credited_block <= scanned_block", name="credited_not_ahead"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    contract: Mapped[str] = mapped_column(ADDRESS)
    # Hash of the deployment block: a chain that was reset (the embedded EVM at every start)
    # redeploys the same addresses, and must not inherit this cursor.
    anchor_block_hash: Mapped[str] = mapped_column(HASH32)
    scanned_block: Mapped[int] = mapped_column(BigInteger)
    credited_block: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class ChainBlock(Base):
    """A block hash the cursor relied on; compared with the chain to find reorganisations."""

    __tablename__ = "chain_blocks"

    cursor_id: Mapped[int] = mapped_column(ForeignKey("chain_cursors.id"), primary_key=True)
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(HASH32)


class ChainEvent(Base):
    """One decoded log of a followed contract, and what the indexer did with it."""

    __tablename__ = "chain_events"
    __table_args__ = (
        UniqueConstraint("cursor_id", "block_hash", "log_index"),
        CheckConstraint(_in("state", EventState), name="state_known"),
        Index(None, "cursor_id", "state", "block_number", "log_index"),
        Index(None, "tx_hash"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    cursor_id: Mapped[int] = mapped_column(ForeignKey("chain_cursors.id"))
    block_number: Mapped[int] = mapped_column(BigInteger)
    block_hash: Mapped[str] = mapped_column(HASH32)
    log_index: Mapped[int] = mapped_column(Integer)
    tx_hash: Mapped[str] = mapped_column(HASH32)
    name: Mapped[str] = mapped_column(String(64))
    # Decoded arguments: integers as decimal strings (uint256 does not fit JSON numbers everywhere),
    # bytes as 0x-hex, addresses EIP-55.
    args: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16), default=EventState.SEEN.value)
    detail: Mapped[str | None] = mapped_column(String(500))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class SettlementBatch(Base):
    """One ``Vault.settle`` transaction: its fills, nonce, calldata and outcome."""

    __tablename__ = "settlement_batches"
    __table_args__ = (
        CheckConstraint(_in("state", BatchState), name="state_known"),
        CheckConstraint("fill_count > 0", name="fill_count_positive"),
        Index(
            "uq_settlement_batches_open",
            "vault",
            unique=True,
            postgresql_where=text(_OPEN_BATCH_PREDICATE),
            sqlite_where=text(_OPEN_BATCH_PREDICATE),
        ),
        Index(None, "state", "id"),
        Index(None, "vault", "id"),  # a vault's newest batch (settlement_repository.newest_batch)
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    vault: Mapped[str] = mapped_column(ADDRESS)
    operator: Mapped[str] = mapped_column(ADDRESS)
    nonce: Mapped[int] = mapped_column(BigInteger)
    gas_limit: Mapped[int] = mapped_column(BigInteger)
    calldata: Mapped[bytes] = mapped_column(LargeBinary)
    fill_count: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(16), default=BatchState.PREPARED.value)
    tx_hash: Mapped[str | None] = mapped_column(HASH32)  # the transaction that was mined, once known
    block_number: Mapped[int | None] = mapped_column(BigInteger)
    gas_used: Mapped[int | None] = mapped_column(BigInteger)
    error_name: Mapped[str | None] = mapped_column(String(64))
    error_args: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(default=utc_now)


class SettlementBatchFill(Base):
    """A fill carried by a batch, at its position in the batch's fill list."""

    __tablename__ = "settlement_batch_fills"
    __table_args__ = (Index(None, "fill_id"),)

    batch_id: Mapped[int] = mapped_column(ForeignKey("settlement_batches.id"), primary_key=True)
    fill_id: Mapped[int] = mapped_column(ForeignKey("trading_fills.id"), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)


class SettlementAttempt(Base):
    """One signed transaction of a batch, stored before it is broadcast.

    ``tx_hash`` is null only while a node that signs for itself (an unlocked
    development account) has not answered yet; a locally signed attempt has its
    hash before it leaves the process.
    """

    __tablename__ = "settlement_attempts"
    __table_args__ = (Index(None, "batch_id", "id"), UniqueConstraint("tx_hash"))

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("settlement_batches.id"))
    tx_hash: Mapped[str | None] = mapped_column(HASH32)
    max_fee_per_gas_wei: Mapped[int] = mapped_column(WeiAmount)
    max_priority_fee_per_gas_wei: Mapped[int] = mapped_column(WeiAmount)
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
    sent_at: Mapped[datetime | None] = mapped_column()


class SettlementFailure(Base):
    """Why a fill was given up: it will never be sent again."""

    __tablename__ = "settlement_failures"
    __table_args__ = (Index(None, "created_at"),)  # read back by time (exchange.trading.fill_notices)

    fill_id: Mapped[int] = mapped_column(ForeignKey("trading_fills.id"), primary_key=True)
    error_name: Mapped[str] = mapped_column(String(64))
    error_args: Mapped[dict[str, Any]] = mapped_column(JSON)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("settlement_batches.id"))
    created_at: Mapped[datetime] = mapped_column(default=utc_now)
