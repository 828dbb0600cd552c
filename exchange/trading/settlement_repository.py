"""All SQL of the settlement pipeline: batches, attempts, and the settlement columns of fills.

Functions take an ``AsyncSession`` and flush at most; the caller's transaction
commits. Rows leave as plain values (``FillRecord``, ``BatchRecord``) so the
pipeline can hold them across transactions and chain calls.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, NamedTuple, cast

from eth_utils.crypto import keccak
from sqlalchemy import CursorResult, and_, func, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.db.base import utc_now
from exchange.trading.fill_notices import announce_failed, announce_settled
from exchange.trading.models import OrderStatus, SettlementState, TradingFill, TradingOrder
from exchange.trading.settlement_models import (
    OPEN_BATCH_STATES,
    BatchState,
    SettlementAttempt,
    SettlementBatch,
    SettlementBatchFill,
    SettlementFailure,
)
from exchange.trading.skipped_fills import SKIPPED_ERROR, SkipReason


@dataclass(frozen=True, slots=True)
class OrderRecord:
    id: int
    account: str
    side: str
    price_quote: int
    amount_base: int
    max_fee_bps: int
    nonce: int
    expiry_unix: int
    order_hash: str
    signature: str


@dataclass(frozen=True, slots=True)
class FillRecord:
    id: int
    market_id: str
    trade_id: int
    maker: OrderRecord
    taker: OrderRecord
    maker_account: str
    taker_account: str
    taker_side: str
    price_quote: int
    amount_base: int
    quote_amount: int
    maker_fee_bps: int
    taker_fee_bps: int
    buyer_fee: int
    seller_fee: int

    @property
    def buyer(self) -> str:
        return self.taker_account if self.taker_side == "buy" else self.maker_account

    @property
    def seller(self) -> str:
        return self.maker_account if self.taker_side == "buy" else self.taker_account

    @property
    def fees(self) -> int:
        return self.buyer_fee + self.seller_fee


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    id: int
    tx_hash: str | None
    max_fee_per_gas_wei: int
    max_priority_fee_per_gas_wei: int
    created_at: datetime


@dataclass(frozen=True, slots=True)
class BatchRecord:
    id: int
    nonce: int
    gas_limit: int
    calldata: bytes
    state: str
    attempts: tuple[AttemptRecord, ...]
    fills: tuple[FillRecord, ...]


def _order(row: TradingOrder) -> OrderRecord:
    return OrderRecord(
        id=row.id,
        account=row.account,
        side=row.side,
        price_quote=row.price_quote,
        amount_base=row.amount_base,
        max_fee_bps=row.max_fee_bps,
        nonce=row.nonce,
        expiry_unix=row.expiry_unix,
        order_hash=row.order_hash,
        signature=row.signature,
    )


async def _with_orders(session: AsyncSession, rows: Sequence[TradingFill]) -> list[FillRecord]:
    ids = {row.maker_order_id for row in rows} | {row.taker_order_id for row in rows}
    orders = {
        order.id: _order(order)
        for order in (await session.scalars(select(TradingOrder).where(TradingOrder.id.in_(ids)))).all()
    }
    return [
        FillRecord(
            id=row.id,
            market_id=row.market_id,
            trade_id=row.trade_id,
            maker=orders[row.maker_order_id],
            taker=orders[row.taker_order_id],
            maker_account=row.maker_account,
            taker_account=row.taker_account,
            taker_side=row.taker_side,
            price_quote=row.price_quote,
            amount_base=row.amount_base,
            quote_amount=row.quote_amount,
            maker_fee_bps=row.maker_fee_bps,
            taker_fee_bps=row.taker_fee_bps,
            buyer_fee=row.buyer_fee,
            seller_fee=row.seller_fee,
        )
        for row in rows
    ]


async def pending_fills(session: AsyncSession, limit: int) -> list[FillRecord]:
    """The oldest fills waiting for a batch, in the order they traded."""
    rows = (
        await session.scalars(
            select(TradingFill)
            .where(TradingFill.settlement_state == SettlementState.PENDING)
            .order_by(TradingFill.id)
            .limit(limit)
        )
    ).all()
    return await _with_orders(session, rows)


async def fills_in_states(session: AsyncSession, states: Iterable[SettlementState]) -> list[FillRecord]:
    rows = (
        await session.scalars(
            select(TradingFill).where(TradingFill.settlement_state.in_(list(states))).order_by(TradingFill.id)
        )
    ).all()
    return await _with_orders(session, rows)


async def serialise_settlers(session: AsyncSession, vault: str) -> None:
    """Until the transaction ends, be the only settler of ``vault`` opening a batch or failing a fill.

    PostgreSQL: a transaction-level advisory lock keyed by the Vault. SQLite runs one writing
    transaction at a time anyway.
    """
    if session.get_bind().dialect.name == "postgresql":
        key = int.from_bytes(keccak(b"settlement:" + vault.lower().encode())[:8], "big", signed=True)
        await session.execute(select(func.pg_advisory_xact_lock(key)))


class NewestBatch(NamedTuple):
    """The last batch opened for a Vault: the one in flight, if any (at most one is)."""

    id: int | None  # None before the first
    open: bool


async def newest_batch(session: AsyncSession, vault: str) -> NewestBatch:
    """The id of the last batch opened for ``vault`` and whether it is still open."""
    row = (
        await session.execute(
            select(SettlementBatch.id, SettlementBatch.state)
            .where(SettlementBatch.vault == vault)
            .order_by(SettlementBatch.id.desc())
            .limit(1)
        )
    ).first()
    return (
        NewestBatch(None, False) if row is None else NewestBatch(int(row.id), row.state in OPEN_BATCH_STATES)
    )


async def open_batch(session: AsyncSession, vault: str) -> BatchRecord | None:
    """The batch of `vault` still in flight (at most one), with its attempts and fills."""
    statement = select(SettlementBatch).where(
        SettlementBatch.vault == vault, SettlementBatch.state.in_(list(OPEN_BATCH_STATES))
    )
    if session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update()
    batch = await session.scalar(statement)
    if batch is None:
        return None
    attempts = (
        await session.scalars(
            select(SettlementAttempt)
            .where(SettlementAttempt.batch_id == batch.id)
            .order_by(SettlementAttempt.id)
        )
    ).all()
    fill_rows = (
        await session.scalars(
            select(TradingFill)
            .join(SettlementBatchFill, SettlementBatchFill.fill_id == TradingFill.id)
            .where(SettlementBatchFill.batch_id == batch.id)
            .order_by(SettlementBatchFill.position)
        )
    ).all()
    return BatchRecord(
        id=batch.id,
        nonce=batch.nonce,
        gas_limit=batch.gas_limit,
        calldata=batch.calldata,
        state=batch.state,
        attempts=tuple(
            AttemptRecord(
                a.id, a.tx_hash, a.max_fee_per_gas_wei, a.max_priority_fee_per_gas_wei, a.created_at
            )
            for a in attempts
        ),
        fills=tuple(await _with_orders(session, fill_rows)),
    )


async def settled_amounts(session: AsyncSession, order_ids: Iterable[int]) -> dict[int, int]:
    """Base units of settled fills per order (as maker or taker): what the Vault has recorded for it."""
    ids = list(set(order_ids))
    rows = (
        await session.execute(
            select(TradingFill.maker_order_id, TradingFill.taker_order_id, TradingFill.amount_base).where(
                # Written into the statement, so that every plan can use the partial indexes of
                # settled fills by order (a bound state would allow a plan made for any state).
                TradingFill.settlement_state == literal(SettlementState.SETTLED.value, literal_execute=True),
                or_(TradingFill.maker_order_id.in_(ids), TradingFill.taker_order_id.in_(ids)),
            )
        )
    ).all()
    totals: dict[int, int] = defaultdict(int)
    for maker_id, taker_id, amount in rows:
        totals[maker_id] += amount
        totals[taker_id] += amount
    return dict(totals)


async def open_new_batch(
    session: AsyncSession,
    *,
    chain_id: int,
    vault: str,
    operator: str,
    nonce: int,
    gas_limit: int,
    calldata: bytes,
    fill_ids: Sequence[int],
    tx_hash: str | None,
    max_fee_per_gas_wei: int,
    max_priority_fee_per_gas_wei: int,
) -> tuple[int, int] | None:
    """Write a batch, its first attempt and its fills, and claim the fills; (batch id, attempt id).

    None when any fill is no longer pending (nothing written): the caller rolls back and retries.
    """
    await serialise_settlers(session, vault)
    batch = SettlementBatch(
        chain_id=chain_id,
        vault=vault,
        operator=operator,
        nonce=nonce,
        gas_limit=gas_limit,
        calldata=calldata,
        fill_count=len(fill_ids),
        state=BatchState.PREPARED.value,
    )
    session.add(batch)
    await session.flush()
    claimed = await session.execute(
        update(TradingFill)
        .where(TradingFill.id.in_(list(fill_ids)), TradingFill.settlement_state == SettlementState.PENDING)
        .values(settlement_state=SettlementState.SUBMITTED.value, batch_id=batch.id, tx_hash=tx_hash)
    )
    if claimed.rowcount != len(fill_ids):  # type: ignore[attr-defined]
        return None
    session.add_all(
        SettlementBatchFill(batch_id=batch.id, fill_id=fill_id, position=position)
        for position, fill_id in enumerate(fill_ids)
    )
    attempt_id = await add_attempt(
        session,
        batch.id,
        tx_hash=tx_hash,
        max_fee_per_gas_wei=max_fee_per_gas_wei,
        max_priority_fee_per_gas_wei=max_priority_fee_per_gas_wei,
    )
    return batch.id, attempt_id


async def add_attempt(
    session: AsyncSession,
    batch_id: int,
    *,
    tx_hash: str | None,
    max_fee_per_gas_wei: int,
    max_priority_fee_per_gas_wei: int,
) -> int:
    attempt = SettlementAttempt(
        batch_id=batch_id,
        tx_hash=tx_hash,
        max_fee_per_gas_wei=max_fee_per_gas_wei,
        max_priority_fee_per_gas_wei=max_priority_fee_per_gas_wei,
    )
    session.add(attempt)
    await session.flush()
    if tx_hash is not None:
        await session.execute(
            update(TradingFill).where(TradingFill.batch_id == batch_id).values(tx_hash=tx_hash)
        )
    return attempt.id


async def mark_sent(session: AsyncSession, batch_id: int, attempt_id: int, tx_hash: str) -> None:
    """The node accepted the attempt; a node-signed attempt learns its hash here."""
    now = utc_now()
    attempt = await session.get_one(SettlementAttempt, attempt_id)
    attempt.sent_at = now
    if attempt.tx_hash is None:
        attempt.tx_hash = tx_hash
        await session.execute(
            update(TradingFill)
            .where(
                TradingFill.batch_id == batch_id, TradingFill.settlement_state == SettlementState.SUBMITTED
            )
            .values(tx_hash=tx_hash)
        )
    # Conditional: another settler may have closed the batch meanwhile, and a closed one stays closed.
    await session.execute(
        update(SettlementBatch)
        .where(SettlementBatch.id == batch_id, SettlementBatch.state == BatchState.PREPARED)
        .values(state=BatchState.SUBMITTED.value, updated_at=now)
    )
    await session.flush()


async def batch_is_open(session: AsyncSession, batch_id: int) -> bool:
    """Still in flight: no settler has closed it."""
    state = await session.scalar(select(SettlementBatch.state).where(SettlementBatch.id == batch_id))
    return state in OPEN_BATCH_STATES


async def _close(session: AsyncSession, batch_id: int, **values: Any) -> bool:
    """Close the batch if it is still open; False when another settler closed it first.

    The state test is in the UPDATE, so of two settlers closing the same batch exactly one
    changes the row (PostgreSQL re-checks the condition after waiting for the other's commit).
    """
    result = await session.execute(
        update(SettlementBatch)
        .where(SettlementBatch.id == batch_id, SettlementBatch.state.in_(list(OPEN_BATCH_STATES)))
        .values(updated_at=utc_now(), **values)
        .execution_options(synchronize_session=False)
    )
    return bool(cast(CursorResult[Any], result).rowcount == 1)


async def close_settled(
    session: AsyncSession,
    batch_id: int,
    *,
    tx_hash: str | None,
    block_number: int | None,
    gas_used: int | None,
    skipped: Mapping[int, tuple[str, dict[str, Any]]] | None = None,
) -> bool:
    """The batch ran: it and its fills are settled, but for the ``skipped`` ones (fill id → failure
    name and arguments), which the Vault passed over: those fail for good in the batch. Serving
    processes hear of both on commit. False (and nothing written) if the batch was
    closed already."""
    closed = await _close(
        session,
        batch_id,
        state=BatchState.SETTLED.value,
        tx_hash=tx_hash,
        block_number=block_number,
        gas_used=gas_used,
    )
    if not closed:
        return False
    skipped = skipped or {}
    values: dict[str, Any] = {"settlement_state": SettlementState.SETTLED.value}
    if tx_hash is not None:
        values["tx_hash"] = tx_hash
    await session.execute(
        update(TradingFill)
        .where(TradingFill.batch_id == batch_id, TradingFill.id.not_in(list(skipped)))
        .values(**values)
    )
    if skipped:
        await session.execute(
            update(TradingFill)
            .where(TradingFill.batch_id == batch_id, TradingFill.id.in_(list(skipped)))
            .values(settlement_state=SettlementState.FAILED.value)
        )
    await _record_failures(session, skipped, batch_id)
    await announce_settled(session, batch_id)
    return True


async def settled_fills_of_batch(session: AsyncSession, batch_id: int) -> list[TradingFill]:
    """The settled fills of a batch, by market and in the order they were matched."""
    rows = await session.scalars(
        select(TradingFill)
        .where(
            TradingFill.batch_id == batch_id,
            TradingFill.settlement_state == SettlementState.SETTLED.value,
        )
        .order_by(TradingFill.market_id, TradingFill.id)
    )
    return list(rows)


async def _record_failures(
    session: AsyncSession, failures: Mapping[int, tuple[str, dict[str, Any]]], batch_id: int | None
) -> None:
    """Write why each failed fill (fill id → failure name and arguments) failed; serving processes
    hear of them on commit."""
    session.add_all(
        SettlementFailure(fill_id=fill_id, error_name=name, error_args=args, batch_id=batch_id)
        for fill_id, (name, args) in failures.items()
    )
    await session.flush()
    for fill_id in failures:
        await announce_failed(session, fill_id)


async def close_returned(
    session: AsyncSession,
    batch_id: int,
    state: BatchState,
    *,
    error_name: str | None = None,
    error_args: dict[str, Any] | None = None,
    tx_hash: str | None = None,
    block_number: int | None = None,
) -> bool:
    """The batch did not settle: record why, and put its fills back to pending.

    False (and nothing written) if the batch was closed already.
    """
    values: dict[str, Any] = {"state": state.value, "tx_hash": tx_hash, "block_number": block_number}
    if error_name is not None:  # a None would be stored as JSON null, not as no reason
        values |= {"error_name": error_name, "error_args": error_args}
    closed = await _close(session, batch_id, **values)
    if not closed:
        return False
    await session.execute(
        update(TradingFill)
        .where(TradingFill.batch_id == batch_id, TradingFill.settlement_state == SettlementState.SUBMITTED)
        .values(settlement_state=SettlementState.PENDING.value, batch_id=None, tx_hash=None)
    )
    await session.flush()
    return True


async def reverted_batches_of(
    session: AsyncSession, fill_ids: Iterable[int], error_names: Iterable[str]
) -> dict[int, int]:
    """How many batches each fill was part of that reverted with one of `error_names`."""
    rows = (
        await session.execute(
            select(SettlementBatchFill.fill_id, func.count())
            .join(SettlementBatch, SettlementBatch.id == SettlementBatchFill.batch_id)
            .where(
                SettlementBatchFill.fill_id.in_(list(fill_ids)),
                SettlementBatch.state == BatchState.REVERTED,
                SettlementBatch.error_name.in_(list(error_names)),
            )
            .group_by(SettlementBatchFill.fill_id)
        )
    ).all()
    return {int(fill_id): int(count) for fill_id, count in rows}


async def fail_fill(
    session: AsyncSession, fill_id: int, *, error_name: str, error_args: dict[str, Any], batch_id: int | None
) -> bool:
    """Give the pending fill up for good, with the reason; serving processes hear of it on commit.

    False, and nothing written, when the fill is no longer pending outside any batch (another
    settler put it in a batch, or failed it, meanwhile).
    """
    failed = await session.execute(
        update(TradingFill)
        .where(
            TradingFill.id == fill_id,
            TradingFill.settlement_state == SettlementState.PENDING,
            TradingFill.batch_id.is_(None),
        )
        .values(settlement_state=SettlementState.FAILED.value, batch_id=batch_id)
    )
    if failed.rowcount != 1:  # type: ignore[attr-defined]
        return False
    await _record_failures(session, {fill_id: (error_name, error_args)}, batch_id)
    return True


# The error of a Vault deployed before ``settle`` skipped the fills of an order whose signature
# its maker does not accept (``SkipReason.WALLET_REFUSED``): it reverted so for a contract
# wallet's refusal, and the failures it caused keep that name. The Vault now never raises it.
INVALID_SIGNATURE_ERROR = "VaultInvalidSignature"


async def disowned_orders(
    session: AsyncSession, market_id: str, fill_ids: Sequence[int] | None = None
) -> list[TradingOrder]:
    """The open orders of ``market_id`` whose signature the Vault refused when a fill of theirs
    settled (a fill skipped with ``WALLET_REFUSED``, or ``VaultInvalidSignature``, naming the
    order's hash): a contract wallet no longer accepts it, and no fill of the order could
    settle. Only fills among ``fill_ids`` when given.

    Such failures are rare (they need a wallet that withdrew its approval), so reading all of a
    market's is cheap; the orders are read by primary key."""
    wallet_refused = and_(
        SettlementFailure.error_name == SKIPPED_ERROR,
        SettlementFailure.error_args["skipReason"].as_string() == SkipReason.WALLET_REFUSED.name,
    )
    failed = (
        select(TradingFill.maker_order_id, TradingFill.taker_order_id, SettlementFailure.error_args)
        .join(SettlementFailure, SettlementFailure.fill_id == TradingFill.id)
        .where(
            or_(SettlementFailure.error_name == INVALID_SIGNATURE_ERROR, wallet_refused),
            TradingFill.market_id == market_id,
        )
    )
    if fill_ids is not None:
        failed = failed.where(TradingFill.id.in_(fill_ids))
    named: dict[int, set[str]] = defaultdict(set)  # order id: the order hashes the Vault refused
    for maker_order_id, taker_order_id, error_args in await session.execute(failed):
        refused = str((error_args or {}).get("orderHash", "")).lower()
        named[maker_order_id].add(refused)
        named[taker_order_id].add(refused)
    if not named:
        return []
    orders = await session.scalars(
        select(TradingOrder)
        .where(TradingOrder.id.in_(list(named)), TradingOrder.status == OrderStatus.OPEN.value)
        .order_by(TradingOrder.id)
    )
    return [order for order in orders if order.order_hash.lower() in named[order.id]]
