"""The real book and the naive reference book emit identical events.

A Hypothesis state machine drives both with the same commands, checks every
invariant after every step, and now and then swaps the real book for one
restored from its own snapshot: the restored book must go on exactly alike.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from exchange.orderbook import (
    Amend,
    Cancel,
    CancelAll,
    Command,
    OrderBook,
    PlaceLimit,
    Side,
)
from tests.orderbook.commands import (
    MARKET,
    accounts,
    amounts,
    limit_orders,
    market_orders,
    prices,
    sides,
    valid_amounts,
)
from tests.orderbook.invariants import BookObserver
from tests.orderbook.reference import ReferenceBook

# One rule draws the kind of step, so that the mix resembles real traffic.
STEPS = ["limit"] * 40 + ["amend"] * 30 + ["cancel"] * 12 + ["market"] * 10
STEPS += ["cancel_all"] * 3 + ["restore"] * 5


class BookVersusReference(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.book = OrderBook(MARKET)
        self.reference = ReferenceBook(MARKET)
        self.observer = BookObserver()

    def run(self, command: Command) -> None:
        real = self.book.apply(command)
        expected = self.reference.apply(command)
        assert real == expected, f"{command}\nreal:     {real}\nexpected: {expected}"
        self.observer.observe(self.book, real)

    @initialize(data=st.data())
    def fill_book(self, data: st.DataObject) -> None:
        """Start from a book with some depth, so that queues have several orders."""
        for _ in range(data.draw(st.integers(0, 25))):
            side = data.draw(sides)
            price = data.draw(st.integers(97, 100) if side is Side.BUY else st.integers(101, 104))
            order_id = self.book.last_order_id + 1
            self.run(PlaceLimit(order_id, data.draw(accounts), side, price, data.draw(valid_amounts)))

    @rule(data=st.data())
    def step(self, data: st.DataObject) -> None:
        kind = data.draw(st.sampled_from(STEPS))
        if kind == "limit":
            self.run(data.draw(limit_orders(self.book.last_order_id)))
        elif kind == "market":
            self.run(data.draw(market_orders(self.book.last_order_id)))
        elif kind == "cancel":
            self.run(Cancel(*self.some_order(data)))
        elif kind == "amend":
            self.run(self.some_amend(data))
        elif kind == "cancel_all":
            self.run(CancelAll(data.draw(accounts)))
        else:
            self.snapshot_and_restore()

    def some_order(self, data: st.DataObject) -> tuple[int, str]:
        """Mostly a resting order with its owner; sometimes a wrong owner or a dead id."""
        resting = [(o.order_id, o.account) for o in self.reference.resting]
        if resting and data.draw(st.integers(0, 9)) > 0:
            return data.draw(st.sampled_from(resting))
        return data.draw(st.integers(0, self.book.last_order_id + 1)), data.draw(accounts)

    def some_amend(self, data: st.DataObject) -> Amend:
        order_id, account = self.some_order(data)
        current = self.book.order(order_id)
        if current is None:
            price = data.draw(st.one_of(st.none(), prices))
            amount = data.draw(st.one_of(st.none(), amounts))
            return Amend(order_id, account, price, amount)
        # Same-price amends are where the priority rules live: favour them.
        price = data.draw(st.sampled_from([None, None, current.price_ticks, -1]))
        if price == -1:
            price = data.draw(prices)
        lot = MARKET.lot_size_base
        amount = data.draw(
            st.sampled_from([None, current.remaining_base + lot, current.remaining_base - lot, 0])
        )
        if amount == 0:
            amount = data.draw(amounts)
        return Amend(order_id, account, price, amount)

    def snapshot_and_restore(self) -> None:
        restored = OrderBook.restore(self.book.snapshot())
        assert restored.state_hash() == self.book.state_hash()
        assert restored.depth(1000) == self.book.depth(1000)
        self.book = restored

    @invariant()
    def same_resting_orders(self) -> None:
        for order in self.reference.resting:
            view = self.book.order(order.order_id)
            assert view is not None
            assert (view.price_ticks, view.remaining_base, view.account) == (
                order.price_ticks,
                order.remaining_base,
                order.account,
            )
        assert len(self.book) == len(self.reference.resting)

    @invariant()
    def same_queues(self) -> None:
        """L3: every level holds the same orders in the same priority order."""
        for side in (Side.BUY, Side.SELL):
            expected: dict[int, list[int]] = {}
            for order in self.reference.sorted_side(side):
                expected.setdefault(order.price_ticks, []).append(order.order_id)
            for price_ticks, order_ids in expected.items():
                queue = self.book.level_orders(side, price_ticks)
                assert [o.order_id for o in queue] == order_ids


BookVersusReference.TestCase.settings = settings(
    max_examples=100,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_book_matches_reference = BookVersusReference.TestCase
