"""The journal of a market: reading it back as book commands, replaying it, and recovering the
book from its checkpoint and journal (:func:`recover_book`).

A market's journal is the union of its ``trading_orders`` (each a ``PlaceLimit``
whose order id is its sequence) and its ``trading_cancels`` (``Cancel`` of one
order, or ``CancelAll`` of an account), in ``sequence`` order. Every command in
it was accepted by the book when it was journaled, so replaying it must accept
every command again; anything else is a ``RecoveryFailed``.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.kit.logging import get_logger
from exchange.orderbook import Cancel, CancelAll, Command, MarketConfig, OrderBook, PlaceLimit, Rejected, Side
from exchange.trading.intake import TIME_IN_FORCE
from exchange.trading.intents import OrderRow
from exchange.trading.models import OrderStatus, TradingBook, TradingCancel, TradingOrder

log = get_logger(__name__)


class RecoveryFailed(RuntimeError):
    """The journal, the checkpoint and the order table disagree: the market cannot start."""


async def journal(
    session: AsyncSession, market_id: str, tick_size_quote: int, *, after: int = 0
) -> AsyncIterator[tuple[int, Command]]:
    """The market's journal after sequence ``after``, as book commands in sequence order.

    Placed orders stream from ``trading_orders``; cancels, far fewer, are read at once and merged in.
    """
    orders = await session.stream(
        select(
            TradingOrder.sequence,
            TradingOrder.account,
            TradingOrder.side,
            TradingOrder.price_quote,
            TradingOrder.amount_base,
            TradingOrder.time_in_force,
        )
        .where(TradingOrder.market_id == market_id, TradingOrder.sequence > after)
        .order_by(TradingOrder.sequence)
        .execution_options(yield_per=2000)
    )
    cancels = (
        await session.execute(
            select(TradingCancel.sequence, TradingCancel.account, TradingCancel.order_sequence)
            .where(TradingCancel.market_id == market_id, TradingCancel.sequence > after)
            .order_by(TradingCancel.sequence)
        )
    ).all()
    pending = iter(cancels)
    next_cancel = next(pending, None)
    async for sequence, account, side, price_quote, amount_base, time_in_force in orders:
        if price_quote % tick_size_quote:
            # Integer division would move the order to a price its maker never signed.
            raise RecoveryFailed(
                f"journal command {sequence} of {market_id} has the price {price_quote}, which the tick "
                f"size {tick_size_quote} does not divide: the tick changed since it was placed, and "
                "replayed under this one the order would rest at a price its maker never signed"
            )
        while next_cancel is not None and next_cancel[0] < sequence:
            yield next_cancel[0], cancel_command(next_cancel[1], next_cancel[2])
            next_cancel = next(pending, None)
        yield (
            sequence,
            PlaceLimit(
                sequence,
                account,
                Side(side),
                price_quote // tick_size_quote,
                amount_base,
                TIME_IN_FORCE[time_in_force],
            ),
        )
    while next_cancel is not None:
        yield next_cancel[0], cancel_command(next_cancel[1], next_cancel[2])
        next_cancel = next(pending, None)


def cancel_command(account: str, order_sequence: int | None) -> Command:
    return CancelAll(account) if order_sequence is None else Cancel(order_sequence, account)


async def replay(session: AsyncSession, book: OrderBook, market_id: str, *, after: int) -> int:
    """Apply the journal after ``after`` to ``book``; the last sequence applied (``after`` if none)."""
    last = after
    async for sequence, command in journal(session, market_id, book.market.tick_size_quote, after=after):
        if sequence <= last:
            raise RecoveryFailed(f"journal sequence {sequence} of {market_id} repeats or goes back")
        events = book.apply(command)
        if events and isinstance(events[0], Rejected):
            raise RecoveryFailed(
                f"journal command {sequence} of {market_id} is refused on replay: {events[0].reason.value}"
            )
        last = sequence
    return last


def checkpoint_columns(book: OrderBook, sequence: int) -> dict[str, Any]:
    """The ``trading_books`` checkpoint columns for ``book`` (which carries the market's rules)
    at journal ``sequence``."""
    snapshot = book.snapshot()
    return {
        "checkpoint_sequence": sequence,
        "checkpoint_state_hash": hashlib.sha256(snapshot).hexdigest(),
        "checkpoint_snapshot": snapshot,
    }


def record_checkpoint(head: TradingBook, book: OrderBook) -> None:
    """Make ``book`` the checkpoint at ``head``'s sequence."""
    for name, value in checkpoint_columns(book, head.sequence).items():
        setattr(head, name, value)


@dataclass(frozen=True, slots=True)
class RecoveredBook:
    """A market's book rebuilt from its checkpoint and journal (:func:`recover_book`)."""

    book: OrderBook
    sequence: int  # the journal head
    checkpoint_sequence: int
    live: dict[int, OrderRow]  # the open orders, by sequence


async def recover_book(
    session: AsyncSession, market_id: str, config: MarketConfig, *, verify_replay: bool
) -> RecoveredBook:
    """The market's book as its checkpoint and journal rebuild it under the rules ``config``.

    Restore the last checkpoint (its bytes must hash to the recorded state hash), replay
    the journal after it, and check that the journal head matches, that every replayed
    command is accepted again, and that the open orders in ``trading_orders`` are exactly
    the book's orders with the same remaining amounts. With ``verify_replay`` the whole
    journal is also replayed, from its first command (or from the last change of the
    market's rules, which finds the book empty: ``trading_books.rules_sequence``), and must
    give the same state hash. Any mismatch is a ``RecoveryFailed``: the service does not
    trade on a book it cannot vouch for.

    A market's first start records its rules with its empty book; a book whose rules
    changed is emptied under the new ones (refused while orders rest). Both are written in
    ``session``'s transaction, which the caller commits.
    """
    head = await session.get(TradingBook, market_id)
    if head is None:  # the market's first start: its rules are recorded with its empty book
        head = TradingBook(market_id=market_id, sequence=0, rules_sequence=0)
        record_checkpoint(head, OrderBook(config))
        session.add(head)
        await session.flush()
    if head.checkpoint_snapshot is not None:
        snapshot = bytes(head.checkpoint_snapshot)
        if hashlib.sha256(snapshot).hexdigest() != head.checkpoint_state_hash:
            raise RecoveryFailed(f"the checkpoint of {market_id} does not match its state hash")
        book = OrderBook.restore(snapshot)  # under the rules its orders were placed by
    else:
        # A market from before its rules were recorded: its journal is replayed under
        # today's, which refuses a price off their tick (``journal.replay``).
        book = OrderBook(config)
    last = await replay(session, book, market_id, after=head.checkpoint_sequence)
    if last != head.sequence:
        raise RecoveryFailed(f"the journal of {market_id} ends at {last} but its head says {head.sequence}")
    if head.checkpoint_snapshot is None:  # its rules recorded from now on
        record_checkpoint(head, book)
    if book.market != config:
        if len(book):
            raise RecoveryFailed(
                f"the rules of market {market_id} changed while {len(book)} orders rest "
                f"({book.market} then, {config} now); start it with its rules, cancel its "
                "open orders, and change them then"
            )
        log.warning(
            "trading.market_rules_changed",
            market=market_id,
            sequence=head.sequence,
            before=str(book.market),
            after=str(config),
        )
        # The empty book under the new rules goes on counting orders and trades where
        # the old one stopped: trade ids are unique in the market.
        emptied = OrderBook(config)
        emptied.last_order_id, emptied.last_trade_id = book.last_order_id, book.last_trade_id
        book = emptied
        record_checkpoint(head, book)
        head.rules_sequence, head.rules_snapshot = head.sequence, head.checkpoint_snapshot
    if verify_replay and head.checkpoint_sequence > head.rules_sequence:
        # From the first command, or from the empty book the last change of rules found.
        since = head.rules_snapshot
        full = OrderBook(config) if since is None else OrderBook.restore(bytes(since))
        await replay(session, full, market_id, after=head.rules_sequence)
        if full.state_hash() != book.state_hash():
            raise RecoveryFailed(
                f"replaying the journal of {market_id} from its sequence {head.rules_sequence} "
                "disagrees with its checkpoint"
            )
    open_rows = (
        await session.scalars(
            select(TradingOrder).where(
                TradingOrder.market_id == market_id,
                TradingOrder.status == OrderStatus.OPEN.value,
            )
        )
    ).all()
    live = {model.sequence: OrderRow.from_model(model) for model in open_rows}
    resting = {order_id: node.remaining_base for order_id, node in book.orders.items()}
    recorded = {sequence: row.remaining_base for sequence, row in live.items()}
    if resting != recorded:
        differing = sorted(set(resting.items()) ^ set(recorded.items()))[:5]
        raise RecoveryFailed(f"the open orders of {market_id} differ from its replayed book: {differing}")
    return RecoveredBook(book, head.sequence, head.checkpoint_sequence, live)
