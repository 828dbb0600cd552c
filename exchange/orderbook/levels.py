"""The book's storage: order nodes, price levels and one side's sorted prices.

Each price level holds its orders in an intrusive doubly linked list (head is
the oldest), so unlinking any order is O(1) however many rest at its price.
A side keeps ``levels`` (key -> level) and ``keys``, the keys sorted ascending
with the best price last: bids use the price as key, asks its negation. So the
best level is ``keys[-1]`` on both sides, and an order at ``price_ticks``
crosses the opposite side when ``keys[-1] >= threshold`` with ``threshold``
``-price_ticks`` for a buy and ``price_ticks`` for a sell.

New levels are placed with a binary search; because activity clusters at the
top of the book, which is the end of ``keys``, inserting or removing a level
moves few list entries.
"""

from __future__ import annotations

from bisect import bisect_left, insort

from exchange.orderbook.market import SelfTradePrevention, Side, TimeInForce
from exchange.orderbook.views import LevelView, OrderView


class OrderNode:
    """An order while the book works on it or while it rests."""

    __slots__ = (
        "account",
        "cancelled_base",
        "filled_base",
        "level",
        "next",
        "order_id",
        "original_base",
        "prev",
        "price_ticks",
        "remaining_base",
        "self_trade",
        "side",
        "time_in_force",
    )

    level: PriceLevel
    prev: OrderNode | None
    next: OrderNode | None

    def __init__(
        self,
        order_id: int,
        account: str,
        side: Side,
        price_ticks: int,
        amount_base: int,
        time_in_force: TimeInForce,
        self_trade: SelfTradePrevention,
    ) -> None:
        self.order_id = order_id
        self.account = account
        self.side = side
        self.price_ticks = price_ticks
        self.original_base = amount_base
        self.filled_base = 0
        self.remaining_base = amount_base
        self.cancelled_base = 0
        self.time_in_force = time_in_force
        self.self_trade = self_trade
        self.prev = None
        self.next = None

    def view(self) -> OrderView:
        return OrderView(
            self.order_id,
            self.account,
            self.side,
            self.price_ticks,
            self.original_base,
            self.filled_base,
            self.remaining_base,
            self.cancelled_base,
            self.time_in_force,
            self.self_trade,
        )


class PriceLevel:
    """All resting orders of one side at one price, oldest first."""

    __slots__ = (
        "amount_base",
        "head",
        "key",
        "mark",
        "order_count",
        "price_ticks",
        "side",
        "tail",
    )

    head: OrderNode | None
    tail: OrderNode | None

    def __init__(self, side: Side, price_ticks: int, key: int) -> None:
        self.side = side
        self.price_ticks = price_ticks
        self.key = key
        self.head = None
        self.tail = None
        self.amount_base = 0
        self.order_count = 0
        # Number of the last command that touched this level; see OrderBook.apply.
        self.mark = 0

    def append(self, node: OrderNode) -> None:
        """Put ``node`` at the back of the queue."""
        tail = self.tail
        node.level = self
        node.prev = tail
        node.next = None
        if tail is None:
            self.head = node
        else:
            tail.next = node
        self.tail = node
        self.amount_base += node.remaining_base
        self.order_count += 1

    def unlink(self, node: OrderNode) -> None:
        """Take ``node`` out of the queue; the caller drops the level if it empties."""
        prev = node.prev
        nxt = node.next
        if prev is None:
            self.head = nxt
        else:
            prev.next = nxt
        if nxt is None:
            self.tail = prev
        else:
            nxt.prev = prev
        self.amount_base -= node.remaining_base
        self.order_count -= 1

    def orders(self) -> list[OrderNode]:
        result: list[OrderNode] = []
        node = self.head
        while node is not None:
            result.append(node)
            node = node.next
        return result

    def view(self) -> LevelView:
        return LevelView(self.price_ticks, self.amount_base, self.order_count)


class BookSide:
    """One side of the book: levels by key and the keys sorted, best last."""

    __slots__ = ("keys", "levels", "side", "sign")

    def __init__(self, side: Side) -> None:
        self.side = side
        self.levels: dict[int, PriceLevel] = {}
        self.keys: list[int] = []
        self.sign = 1 if side is Side.BUY else -1

    def level_at(self, price_ticks: int) -> PriceLevel:
        """The level at ``price_ticks``, created if absent."""
        key = price_ticks * self.sign
        level = self.levels.get(key)
        if level is None:
            level = PriceLevel(self.side, price_ticks, key)
            self.levels[key] = level
            keys = self.keys
            if not keys or key > keys[-1]:
                keys.append(key)
            else:
                insort(keys, key)
        return level

    def drop(self, level: PriceLevel) -> None:
        """Forget an empty level."""
        key = level.key
        del self.levels[key]
        keys = self.keys
        if keys[-1] == key:
            keys.pop()
        else:
            del keys[bisect_left(keys, key)]

    def best(self) -> PriceLevel | None:
        keys = self.keys
        return self.levels[keys[-1]] if keys else None

    def best_first(self, count: int | None = None) -> list[PriceLevel]:
        keys = self.keys
        chosen = keys if count is None else keys[max(len(keys) - count, 0) :]
        levels = self.levels
        return [levels[key] for key in reversed(chosen)]
