"""Placing new orders: limit orders (GTC, IOC, FOK, post-only) and market orders.

Only ``OrderBook.apply`` calls these; they work on the book's storage directly.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from exchange.orderbook.commands import PlaceLimit, PlaceMarket
from exchange.orderbook.events import Accepted, Cancelled, CancelReason, Event, Rejected, RejectReason
from exchange.orderbook.levels import OrderNode
from exchange.orderbook.market import Side, TimeInForce
from exchange.orderbook.matching import can_fill, take
from exchange.orderbook.validation import amount_problem, new_order_problem, rejected

if TYPE_CHECKING:
    from exchange.orderbook.book import OrderBook

_BUY: Final = Side.BUY
_IOC: Final = TimeInForce.IOC
_FOK: Final = TimeInForce.FOK
_POST_ONLY: Final = TimeInForce.POST_ONLY
_LIMIT_TIME_IN_FORCE: Final[tuple[TimeInForce, ...]] = tuple(TimeInForce)
_MARKET_TIME_IN_FORCE: Final[tuple[TimeInForce, ...]] = (_IOC, _FOK)


def place_limit(book: OrderBook, command: PlaceLimit) -> list[Event]:
    """A limit order: validate, match what crosses, then rest, cancel or kill the rest."""
    order_id = command.order_id
    account = command.account
    side = command.side
    price_ticks = command.price_ticks
    amount_base = command.amount_base
    time_in_force = command.time_in_force
    reason = new_order_problem(order_id, account, side, command.self_trade, book.last_order_id)
    if reason is None:
        if type(price_ticks) is not int or price_ticks <= 0:
            reason = RejectReason.PRICE_NOT_POSITIVE_INTEGER
        elif time_in_force not in _LIMIT_TIME_IN_FORCE:
            reason = RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        else:
            reason = amount_problem(amount_base, book.lot_size_base, book.min_amount_base)
    if reason is not None:
        return [rejected(order_id, account, reason)]
    if side is _BUY:
        opposite = book.asks
        threshold = -price_ticks
    else:
        opposite = book.bids
        threshold = price_ticks
    keys = opposite.keys
    crosses = bool(keys) and keys[-1] >= threshold
    if crosses and time_in_force is _POST_ONLY:
        return [Rejected(order_id, account, RejectReason.WOULD_TAKE)]

    book.last_order_id = order_id
    node = OrderNode(
        order_id,
        account,
        side,
        price_ticks,
        amount_base,
        time_in_force,
        command.self_trade,
    )
    events: list[Event] = [
        Accepted(
            order_id,
            account,
            side,
            price_ticks,
            amount_base,
            None,
            time_in_force,
            command.self_trade,
        )
    ]
    if time_in_force is _FOK and not (crosses and can_fill(book, node, opposite, threshold)):
        events.append(book.kill(node, CancelReason.FOK))
        return events
    if crosses and take(book, node, opposite, threshold, None, events)[0]:
        events.append(book.kill(node, CancelReason.SELF_TRADE))
    if node.remaining_base:
        if time_in_force is _IOC:
            events.append(book.kill(node, CancelReason.IOC_REMAINDER))
        else:
            book.rest(node)
    return events


def place_market(book: OrderBook, command: PlaceMarket) -> list[Event]:
    """A market order: validate, match at any price, never rest."""
    order_id = command.order_id
    account = command.account
    side = command.side
    amount_base = command.amount_base
    quote_budget = command.quote_budget
    time_in_force = command.time_in_force
    reason = new_order_problem(order_id, account, side, command.self_trade, book.last_order_id)
    if reason is None:
        if time_in_force not in _MARKET_TIME_IN_FORCE:
            reason = RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        elif quote_budget is None:
            if amount_base is None:
                reason = RejectReason.MARKET_ORDER_SIZE
            else:
                reason = amount_problem(amount_base, book.lot_size_base, book.min_amount_base)
        elif amount_base is not None or side is not _BUY:
            reason = RejectReason.MARKET_ORDER_SIZE
        elif time_in_force is _FOK:
            reason = RejectReason.TIME_IN_FORCE_NOT_ALLOWED
        elif type(quote_budget) is not int or quote_budget <= 0:
            reason = RejectReason.QUOTE_BUDGET_NOT_POSITIVE_INTEGER
    if reason is not None:
        return [rejected(order_id, account, reason)]

    book.last_order_id = order_id
    opposite = book.asks if side is _BUY else book.bids
    keys = opposite.keys
    # Every opposite key is >= the worst one, so this threshold admits all.
    threshold = keys[0] if keys else 0
    # A budget buy gets an amount it can never reach (one lot more than the
    # budget buys at one tick), so that only the budget limits it.
    size_base = (
        (quote_budget // book.quote_per_lot_tick + 1) * book.lot_size_base
        if quote_budget is not None
        else amount_base or 0
    )
    node = OrderNode(order_id, account, side, 0, size_base, time_in_force, command.self_trade)
    events: list[Event] = [
        Accepted(
            order_id,
            account,
            side,
            None,
            command.amount_base,
            quote_budget,
            time_in_force,
            command.self_trade,
        )
    ]
    if quote_budget is not None:
        stopped_by_self_trade, unspent = (
            take(book, node, opposite, threshold, quote_budget, events) if keys else (False, quote_budget)
        )
        if unspent:
            end = CancelReason.SELF_TRADE if stopped_by_self_trade else CancelReason.IOC_REMAINDER
            events.append(Cancelled(order_id, account, side, end, 0, unspent))
        return events
    if time_in_force is _FOK and not (keys and can_fill(book, node, opposite, threshold)):
        events.append(book.kill(node, CancelReason.FOK))
        return events
    if keys and take(book, node, opposite, threshold, None, events)[0]:
        events.append(book.kill(node, CancelReason.SELF_TRADE))
    if node.remaining_base:
        events.append(book.kill(node, CancelReason.IOC_REMAINDER))
    return events
