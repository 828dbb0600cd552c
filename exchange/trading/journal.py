"""The journal of a market: reading it back as book commands, and replaying it.

A market's journal is the union of its ``trading_orders`` (each a ``PlaceLimit``
whose order id is its sequence) and its ``trading_cancels`` (``Cancel`` of one
order, or ``CancelAll`` of an account), in ``sequence`` order. Every command in
it was accepted by the book when it was journaled, so replaying it must accept
every command again; anything else is a ``RecoveryFailed``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from exchange.orderbook import Cancel, CancelAll, Command, OrderBook, PlaceLimit, Rejected, Side
from exchange.trading.intake import TIME_IN_FORCE
from exchange.trading.models import TradingCancel, TradingOrder


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
