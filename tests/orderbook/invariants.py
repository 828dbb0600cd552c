"""Checks that must hold after every command, whatever the command was.

``BookObserver`` follows a book through the events it emits and asserts:
the book is never crossed; for every order filled + remaining + cancelled
equals original; no account trades with itself; within a level orders keep
the order in which they (re)entered the queue; and the L2 view rebuilt from
``LevelChanged`` diffs equals the book's own depth.
"""

from __future__ import annotations

from dataclasses import dataclass

from exchange.orderbook import (
    Accepted,
    Amended,
    Cancelled,
    Event,
    LevelChanged,
    OrderBook,
    Side,
    Trade,
)

ALL_LEVELS = 1_000_000


@dataclass
class Ledger:
    original_base: int
    filled_base: int = 0
    cancelled_base: int = 0
    queued_at: int = 0


class BookObserver:
    def __init__(self) -> None:
        self.ledgers: dict[int, Ledger] = {}
        self.l2: dict[tuple[Side, int], tuple[int, int]] = {}
        self.clock = 0

    def observe(self, book: OrderBook, events: list[Event]) -> None:
        self.clock += 1
        for event in events:
            if isinstance(event, Accepted):
                if event.amount_base is not None:
                    self.ledgers[event.order_id] = Ledger(event.amount_base, queued_at=self.clock)
            elif isinstance(event, Trade):
                assert event.maker_account != event.taker_account, "an account traded with itself"
                assert event.amount_base > 0
                self._fill(event.maker_order_id, event.amount_base)
                self._fill(event.taker_order_id, event.amount_base)
            elif isinstance(event, Cancelled):
                ledger = self.ledgers.get(event.order_id)
                if ledger is not None:
                    ledger.cancelled_base += event.amount_base
            elif isinstance(event, Amended):
                ledger = self.ledgers[event.order_id]
                before = self._remaining(ledger)
                if event.amount_base < before:
                    ledger.cancelled_base += before - event.amount_base
                else:
                    ledger.original_base += event.amount_base - before
                if not event.priority_kept:
                    ledger.queued_at = self.clock
            elif isinstance(event, LevelChanged):
                key = (event.side, event.price_ticks)
                if event.amount_base == 0:
                    assert event.order_count == 0
                    self.l2.pop(key, None)
                else:
                    self.l2[key] = (event.amount_base, event.order_count)
        self.check(book)

    def _fill(self, order_id: int, amount_base: int) -> None:
        ledger = self.ledgers.get(order_id)
        if ledger is not None:  # budget market buys have no base ledger
            ledger.filled_base += amount_base

    @staticmethod
    def _remaining(ledger: Ledger) -> int:
        return ledger.original_base - ledger.filled_base - ledger.cancelled_base

    def check(self, book: OrderBook) -> None:
        best_bid, best_ask = book.best_bid(), book.best_ask()
        if best_bid is not None and best_ask is not None:
            assert best_bid.price_ticks < best_ask.price_ticks, "book is crossed"

        for order_id, ledger in self.ledgers.items():
            view = book.order(order_id)
            remaining = 0 if view is None else view.remaining_base
            assert ledger.filled_base + remaining + ledger.cancelled_base == ledger.original_base, order_id
            if view is not None:
                assert (view.original_base, view.filled_base, view.cancelled_base) == (
                    ledger.original_base,
                    ledger.filled_base,
                    ledger.cancelled_base,
                )
                assert view.filled_base + view.remaining_base + view.cancelled_base == view.original_base

        depth = book.depth(ALL_LEVELS)
        rebuilt: dict[tuple[Side, int], tuple[int, int]] = {}
        for side, levels in ((Side.BUY, depth.bids), (Side.SELL, depth.asks)):
            prices = [level.price_ticks for level in levels]
            assert prices == sorted(prices, reverse=side is Side.BUY), "levels out of order"
            for level in levels:
                rebuilt[(side, level.price_ticks)] = (level.amount_base, level.order_count)
                orders = book.level_orders(side, level.price_ticks)
                assert sum(o.remaining_base for o in orders) == level.amount_base
                assert len(orders) == level.order_count
                for limit in (0, 1, len(orders)):
                    accounts = book.level_accounts(side, level.price_ticks, limit)
                    assert accounts == [o.account for o in orders][:limit]
                stamps = [self.ledgers[o.order_id].queued_at for o in orders]
                assert stamps == sorted(stamps), "time priority broken"
        assert rebuilt == self.l2, "L2 diffs do not rebuild the book"
