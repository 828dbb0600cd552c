"""The limit order book of one market: commands in, events out.

Pure and deterministic: no I/O, no clock, no randomness, no floats. The same
commands from the same state always give the same events and the same state.

Invariants
----------
* Price-time priority. A taker meets the best opposite price first and, within
  a price, the oldest order first. Every trade is at the maker's price.
* The book is never crossed after a command: the best bid is below the best ask.
* Amend: lowering the open amount at the same price keeps the order's place;
  a new price or a larger amount puts it at the back of its (new) level. An
  amend whose price crosses the book trades at once, as a taker.
* Order ids are positive ints, strictly increasing per book: an id at or below
  the last accepted one (a duplicate or a replay) is rejected, and a rejected
  command leaves the book unchanged.
* For every order, ``filled + remaining + cancelled == original``. Lowering an
  amount moves the difference to ``cancelled``; raising it grows ``original``.
* No rounding: amounts are lot multiples and ``MarketConfig`` guarantees one lot
  at one tick is a whole number of quote units. A budget market buy takes only
  whole lots it can pay for, and reports the unspent budget.
* No account trades with itself (self-trade prevention, chosen by the taker).

Cost: placing, amending and matching cost O(log levels) plus O(1) per fill;
cancelling any order is O(1) plus O(log levels) when its level empties.
"""

from __future__ import annotations

from typing import Final

from exchange.orderbook.commands import (
    Amend,
    Cancel,
    CancelAll,
    Command,
    PlaceLimit,
    PlaceMarket,
)
from exchange.orderbook.events import (
    Amended,
    Cancelled,
    CancelReason,
    Event,
    LevelChanged,
    Rejected,
    RejectReason,
)
from exchange.orderbook.levels import BookSide, OrderNode, PriceLevel
from exchange.orderbook.market import (
    MarketConfig,
    Side,
    TimeInForce,
)
from exchange.orderbook.matching import take
from exchange.orderbook.placing import place_limit, place_market
from exchange.orderbook.validation import amount_problem, rejected
from exchange.orderbook.views import Depth, LevelView, OrderView

_BUY: Final = Side.BUY
_POST_ONLY: Final = TimeInForce.POST_ONLY


class OrderBook:
    """One market's book.

    Callers change it only through :meth:`apply` and read it through the
    queries. ``rest``, ``forget``, ``kill`` and ``expire`` are storage steps
    shared with the ``placing`` and ``matching`` modules, not an API.
    """

    __slots__ = (
        "accounts",
        "asks",
        "bids",
        "last_order_id",
        "last_trade_id",
        "lot_size_base",
        "mark",
        "market",
        "min_amount_base",
        "orders",
        "quote_per_lot_tick",
        "touched",
    )

    def __init__(self, market: MarketConfig) -> None:
        self.market = market
        self.lot_size_base = market.lot_size_base
        self.min_amount_base = market.min_amount_base
        self.quote_per_lot_tick = market.quote_per_lot_tick
        self.orders: dict[int, OrderNode] = {}
        # Resting orders per account, in id order (ids only grow).
        self.accounts: dict[str, dict[int, OrderNode]] = {}
        self.bids = BookSide(_BUY)
        self.asks = BookSide(Side.SELL)
        self.last_order_id = 0
        self.last_trade_id = 0
        # Levels changed by the command being applied, each listed once: a
        # level whose ``mark`` equals ``self.mark`` is already in ``touched``.
        self.mark = 0
        self.touched: list[PriceLevel] = []

    # ----------------------------------------------------------------- commands

    def apply(self, command: Command) -> list[Event]:
        """Apply one command and return what it did (see ``events``)."""
        self.mark += 1
        if isinstance(command, Amend):
            events = self._amend(command)
        elif isinstance(command, PlaceLimit):
            events = place_limit(self, command)
        elif isinstance(command, Cancel):
            events = self._cancel(command)
        elif isinstance(command, PlaceMarket):
            events = place_market(self, command)
        elif isinstance(command, CancelAll):
            events = self._cancel_all(command)
        else:
            raise TypeError(f"not an order book command: {command!r}")
        touched = self.touched
        if touched:
            for level in touched:
                events.append(
                    LevelChanged(
                        level.side,
                        level.price_ticks,
                        level.amount_base,
                        level.order_count,
                    )
                )
            touched.clear()
        return events

    def _cancel(self, command: Cancel) -> list[Event]:
        node = self.orders.get(command.order_id)
        if node is None:
            return [self._not_found(command.order_id, command.account)]
        if node.account != command.account:
            return [rejected(node.order_id, command.account, RejectReason.NOT_ORDER_OWNER)]
        level = node.level
        events: list[Event] = [self.expire(node, CancelReason.USER)]
        if level.head is None:
            (self.bids if level.side is _BUY else self.asks).drop(level)
        return events

    def _cancel_all(self, command: CancelAll) -> list[Event]:
        account = command.account
        if type(account) is not str or not account:
            return [rejected(None, account, RejectReason.INVALID_ACCOUNT)]
        own = self.accounts.get(account)
        events: list[Event] = []
        if own is None:
            return events
        for node in list(own.values()):
            level = node.level
            events.append(self.expire(node, CancelReason.USER))
            if level.head is None:
                (self.bids if level.side is _BUY else self.asks).drop(level)
        return events

    def _amend(self, command: Amend) -> list[Event]:
        node = self.orders.get(command.order_id)
        if node is None:
            return [self._not_found(command.order_id, command.account)]
        account = node.account
        if account != command.account:
            return [rejected(node.order_id, command.account, RejectReason.NOT_ORDER_OWNER)]
        order_id = node.order_id
        price_ticks = command.price_ticks
        amount_base = command.amount_base
        remaining = node.remaining_base
        reason = None
        if price_ticks is None:
            price_ticks = node.price_ticks
        elif type(price_ticks) is not int or price_ticks <= 0:
            reason = RejectReason.PRICE_NOT_POSITIVE_INTEGER
        if amount_base is None:
            amount_base = remaining
        elif reason is None:
            reason = amount_problem(amount_base, self.lot_size_base, self.min_amount_base)
        if reason is None and price_ticks == node.price_ticks and amount_base == remaining:
            reason = RejectReason.AMEND_NO_CHANGE
        if reason is not None:
            return [Rejected(order_id, account, reason)]
        side = node.side
        level = node.level
        if price_ticks == node.price_ticks:
            # Same price: the order stays in its level, so the level never empties.
            if level.mark != self.mark:
                level.mark = self.mark
                self.touched.append(level)
            level.amount_base += amount_base - remaining
            node.remaining_base = amount_base
            if amount_base < remaining:
                node.cancelled_base += remaining - amount_base
                return [Amended(order_id, account, side, price_ticks, amount_base, True)]
            node.original_base += amount_base - remaining
            if node.next is not None:
                level.unlink(node)
                level.append(node)
            return [Amended(order_id, account, side, price_ticks, amount_base, False)]

        if side is _BUY:
            own_side = self.bids
            opposite = self.asks
            threshold = -price_ticks
        else:
            own_side = self.asks
            opposite = self.bids
            threshold = price_ticks
        keys = opposite.keys
        crosses = bool(keys) and keys[-1] >= threshold
        if crosses and node.time_in_force is _POST_ONLY:
            return [Rejected(order_id, account, RejectReason.WOULD_TAKE)]

        if level.mark != self.mark:
            level.mark = self.mark
            self.touched.append(level)
        level.unlink(node)
        if level.head is None:
            own_side.drop(level)
        if amount_base < remaining:
            node.cancelled_base += remaining - amount_base
        else:
            node.original_base += amount_base - remaining
        node.remaining_base = amount_base
        node.price_ticks = price_ticks
        events: list[Event] = [Amended(order_id, account, side, price_ticks, amount_base, False)]
        if crosses:
            if take(self, node, opposite, threshold, None, events)[0]:
                events.append(self.kill(node, CancelReason.SELF_TRADE))
            if not node.remaining_base:
                self.forget(node)
                return events
        level = own_side.level_at(price_ticks)
        level.append(node)
        if level.mark != self.mark:
            level.mark = self.mark
            self.touched.append(level)
        return events

    # ------------------------------------------------------------ shared steps

    def _not_found(self, order_id: int, account: str) -> Rejected:
        return rejected(order_id, account, RejectReason.ORDER_NOT_FOUND)

    def rest(self, node: OrderNode) -> None:
        order_id = node.order_id
        self.orders[order_id] = node
        own = self.accounts.get(node.account)
        if own is None:
            own = self.accounts[node.account] = {}
        own[order_id] = node
        level = (self.bids if node.side is _BUY else self.asks).level_at(node.price_ticks)
        level.append(node)
        if level.mark != self.mark:
            level.mark = self.mark
            self.touched.append(level)

    def forget(self, node: OrderNode) -> None:
        order_id = node.order_id
        del self.orders[order_id]
        own = self.accounts[node.account]
        del own[order_id]
        if not own:
            del self.accounts[node.account]

    def kill(self, node: OrderNode, reason: CancelReason) -> Cancelled:
        """Cancel the open part of an order that is not (or no longer) resting."""
        amount_base = node.remaining_base
        node.cancelled_base += amount_base
        node.remaining_base = 0
        return Cancelled(node.order_id, node.account, node.side, reason, amount_base)

    def expire(self, node: OrderNode, reason: CancelReason) -> Cancelled:
        """Cancel a resting order; the caller drops its level if it empties."""
        level = node.level
        if level.mark != self.mark:
            level.mark = self.mark
            self.touched.append(level)
        level.unlink(node)
        self.forget(node)
        return self.kill(node, reason)

    # ------------------------------------------------------------------ queries

    def best_bid(self) -> LevelView | None:
        level = self.bids.best()
        return None if level is None else level.view()

    def best_ask(self) -> LevelView | None:
        level = self.asks.best()
        return None if level is None else level.view()

    def depth(self, levels: int = 10) -> Depth:
        """L2: the top ``levels`` price levels of each side, aggregated."""
        return Depth(
            [level.view() for level in self.bids.best_first(levels)],
            [level.view() for level in self.asks.best_first(levels)],
        )

    def level_orders(self, side: Side, price_ticks: int) -> list[OrderView]:
        """L3: the orders resting at one price, in priority order."""
        book_side = self.bids if side is _BUY else self.asks
        level = book_side.levels.get(price_ticks * book_side.sign)
        return [] if level is None else [node.view() for node in level.orders()]

    def level_accounts(self, side: Side, price_ticks: int, limit: int) -> list[str]:
        """The accounts of the first ``limit`` orders resting at one price, in priority order."""
        book_side = self.bids if side is _BUY else self.asks
        level = book_side.levels.get(price_ticks * book_side.sign)
        accounts: list[str] = []
        node = None if level is None else level.head
        while node is not None and len(accounts) < limit:
            accounts.append(node.account)
            node = node.next
        return accounts

    def order(self, order_id: int) -> OrderView | None:
        node = self.orders.get(order_id)
        return None if node is None else node.view()

    def open_orders(self, account: str) -> list[OrderView]:
        """The account's resting orders, oldest first."""
        return [node.view() for node in self.accounts.get(account, {}).values()]

    def __len__(self) -> int:
        return len(self.orders)

    # ------------------------------------------------------------ determinism

    def state_hash(self) -> bytes:
        """SHA-256 of the canonical encoding of the whole book."""
        from exchange.orderbook.snapshot import state_hash

        return state_hash(self)

    def snapshot(self) -> bytes:
        from exchange.orderbook.snapshot import encode

        return encode(self)

    @classmethod
    def restore(cls, data: bytes) -> OrderBook:
        from exchange.orderbook.snapshot import decode

        return decode(data)
