"""Matching a taker against one side of the book.

Split from ``book`` so the hot loop reads in one place. The functions work on
an ``OrderBook``'s storage directly; only the book calls them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from exchange.orderbook.events import CancelReason, Event, Trade
from exchange.orderbook.levels import BookSide, OrderNode
from exchange.orderbook.market import SelfTradePrevention

if TYPE_CHECKING:
    from exchange.orderbook.book import OrderBook

_EXPIRE_TAKER: Final = SelfTradePrevention.EXPIRE_TAKER
_EXPIRE_MAKER: Final = SelfTradePrevention.EXPIRE_MAKER
_SELF_TRADE: Final = CancelReason.SELF_TRADE


def take(
    book: OrderBook,
    taker: OrderNode,
    opposite: BookSide,
    threshold: int,
    quote_budget: int | None,
    events: list[Event],
) -> tuple[bool, int]:
    """Fill ``taker`` from the best levels of ``opposite`` whose key is >= ``threshold``.

    Stops when the taker is filled, the prices stop crossing, the budget (if
    any) cannot pay for one more lot, or self-trade prevention ends the taker.
    Updates the taker's filled and remaining amounts and appends the trades
    and the cancellations of self-trading makers to ``events``. Returns whether
    self-trade prevention ended the taker (the caller cancels its rest) and the
    unspent budget (0 without one).
    """
    keys = opposite.keys
    levels = opposite.levels
    remaining = taker.remaining_base
    taker_id = taker.order_id
    account = taker.account
    side = taker.side
    orders = book.orders
    accounts = book.accounts
    touched = book.touched
    mark = book.mark
    lot_size_base = book.lot_size_base
    quote_per_lot_tick = book.quote_per_lot_tick
    trade_id = book.last_trade_id
    budget = 0 if quote_budget is None else quote_budget
    stopped_by_self_trade = False
    done = False
    while remaining and keys:
        key = keys[-1]
        if key < threshold:
            break
        level = levels[key]
        price_ticks = level.price_ticks
        lot_quote = price_ticks * quote_per_lot_tick
        maker = level.head
        while maker is not None:
            if maker.account == account:
                rule = taker.self_trade
                if rule is not _EXPIRE_TAKER:
                    following = maker.next
                    events.append(book.expire(maker, _SELF_TRADE))
                    maker = following
                if rule is not _EXPIRE_MAKER:
                    stopped_by_self_trade = done = True
                    break
                continue
            fill = maker.remaining_base
            fill = min(fill, remaining)
            if quote_budget is not None:
                affordable = budget // lot_quote * lot_size_base
                if affordable < fill:
                    fill = affordable
                    if not fill:
                        done = True
                        break
                budget -= fill // lot_size_base * lot_quote
            if level.mark != mark:
                level.mark = mark
                touched.append(level)
            trade_id += 1
            events.append(
                Trade(
                    trade_id,
                    maker.order_id,
                    maker.account,
                    taker_id,
                    account,
                    side,
                    price_ticks,
                    fill,
                    fill // lot_size_base * lot_quote,
                )
            )
            remaining -= fill
            level.amount_base -= fill
            maker.filled_base += fill
            left = maker.remaining_base - fill
            maker.remaining_base = left
            if left:
                # The taker ran out (of amount or budget) inside this maker.
                done = True
                break
            # A maker is only reached once everything before it left the
            # level, so a filled maker is always the head.
            following = maker.next
            level.head = following
            if following is None:
                level.tail = None
            else:
                following.prev = None
            level.order_count -= 1
            maker_id = maker.order_id
            del orders[maker_id]
            own = accounts[maker.account]
            del own[maker_id]
            if not own:
                del accounts[maker.account]
            maker = following
            if not remaining:
                done = True
                break
        if level.head is None:
            keys.pop()
            del levels[key]
        if done:
            break
    taker.filled_base += taker.remaining_base - remaining
    taker.remaining_base = remaining
    book.last_trade_id = trade_id
    return stopped_by_self_trade, budget


def can_fill(book: OrderBook, taker: OrderNode, opposite: BookSide, threshold: int) -> bool:
    """Whether ``take`` would fill ``taker`` completely (the fill-or-kill test).

    Counts what self-trade prevention would leave: makers of the taker's own
    account are skipped under EXPIRE_MAKER and end the taker otherwise.
    """
    need = taker.remaining_base
    account = taker.account
    has_own_orders = account in book.accounts
    expire_maker = taker.self_trade is _EXPIRE_MAKER
    keys = opposite.keys
    levels = opposite.levels
    for index in range(len(keys) - 1, -1, -1):
        key = keys[index]
        if key < threshold:
            return False
        level = levels[key]
        if not has_own_orders:
            need -= level.amount_base
            if need <= 0:
                return True
            continue
        maker = level.head
        while maker is not None:
            if maker.account == account:
                if not expire_maker:
                    return False
            else:
                need -= maker.remaining_base
                if need <= 0:
                    return True
            maker = maker.next
    return False
