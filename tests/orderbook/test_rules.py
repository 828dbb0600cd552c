"""The book's rules, one scenario each."""

from __future__ import annotations

from typing import TypeVar

import pytest

from exchange.orderbook import (
    Accepted,
    Amend,
    Amended,
    Cancel,
    CancelAll,
    Cancelled,
    CancelReason,
    Command,
    Event,
    LevelChanged,
    LevelView,
    MarketConfig,
    OrderBook,
    PlaceLimit,
    PlaceMarket,
    Rejected,
    RejectReason,
    SelfTradePrevention,
    Side,
    SnapshotError,
    TimeInForce,
    Trade,
)
from tests.orderbook.commands import MARKET

BUY, SELL = Side.BUY, Side.SELL
ALICE, BOB, CAROL = "0xA11CE", "0xB0B", "0xCA7"
T = TypeVar("T")


def book_with(*commands: Command) -> OrderBook:
    book = OrderBook(MARKET)
    for command in commands:
        events = book.apply(command)
        assert not any(isinstance(event, Rejected) for event in events), events
    return book


def of_type(events: list[Event], kind: type[T]) -> list[T]:
    return [event for event in events if isinstance(event, kind)]


def queue(book: OrderBook, side: Side, price_ticks: int) -> list[int]:
    return [order.order_id for order in book.level_orders(side, price_ticks)]


# ----------------------------------------------------------------- market config


@pytest.mark.parametrize(
    "changes",
    [
        {"market_id": ""},
        {"tick_size_quote": 0},
        {"lot_size_base": -1},
        {"min_amount_base": 3},  # not a lot multiple
        {"price_scale_base": 10**18, "tick_size_quote": 1, "lot_size_base": 10**15},  # a lot-tick would round
    ],
)
def test_market_config_refuses_unsafe_rules(changes: dict[str, object]) -> None:
    fields: dict[str, object] = {
        "market_id": "BPC-USD",
        "base_asset": "BPC",
        "quote_asset": "USD",
        "tick_size_quote": 3,
        "lot_size_base": 2,
        "min_amount_base": 4,
    }
    fields.update(changes)
    with pytest.raises(ValueError, match="must"):
        MarketConfig(**fields)  # type: ignore[arg-type]


def test_quote_amounts_are_exact_for_18_decimal_tokens() -> None:
    market = MarketConfig("BPC-USDC", "BPC", "USDC", 10_000, 10**15, 10**16, price_scale_base=10**18)
    # One lot (0.001 BPC) at one tick (0.01 USDC per BPC with 6 decimals) is 10 quote units.
    assert market.quote_per_lot_tick == 10
    assert market.quote_amount(price_ticks=250, amount_base=3 * 10**15) == 7_500


# ------------------------------------------------------------------- rejections


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        (PlaceLimit(0, ALICE, BUY, 100, 4), RejectReason.INVALID_ORDER_ID),
        (PlaceLimit(2, ALICE, BUY, 100, 4), RejectReason.ORDER_ID_NOT_INCREASING),
        (PlaceLimit(9, "", BUY, 100, 4), RejectReason.INVALID_ACCOUNT),
        (PlaceLimit(9, ALICE, "buy", 100, 4), RejectReason.INVALID_SIDE),  # type: ignore[arg-type]
        (PlaceLimit(9, ALICE, BUY, 0, 4), RejectReason.PRICE_NOT_POSITIVE_INTEGER),
        (PlaceLimit(9, ALICE, BUY, 100.5, 4), RejectReason.PRICE_NOT_POSITIVE_INTEGER),  # type: ignore[arg-type]
        (PlaceLimit(9, ALICE, BUY, 100, 0), RejectReason.AMOUNT_NOT_POSITIVE_INTEGER),
        (PlaceLimit(9, ALICE, BUY, 100, 5), RejectReason.AMOUNT_NOT_LOT_MULTIPLE),
        (PlaceLimit(9, ALICE, BUY, 100, 2), RejectReason.AMOUNT_BELOW_MINIMUM),
        (PlaceLimit(9, ALICE, BUY, 101, 4, TimeInForce.POST_ONLY), RejectReason.WOULD_TAKE),
        (PlaceMarket(9, ALICE, BUY), RejectReason.MARKET_ORDER_SIZE),
        (PlaceMarket(9, ALICE, SELL, quote_budget=100), RejectReason.MARKET_ORDER_SIZE),
        (PlaceMarket(9, ALICE, BUY, 4, 100), RejectReason.MARKET_ORDER_SIZE),
        (
            PlaceMarket(9, ALICE, BUY, 4, time_in_force=TimeInForce.GTC),
            RejectReason.TIME_IN_FORCE_NOT_ALLOWED,
        ),
        (
            PlaceMarket(9, ALICE, BUY, quote_budget=100, time_in_force=TimeInForce.FOK),
            RejectReason.TIME_IN_FORCE_NOT_ALLOWED,
        ),
        (PlaceMarket(9, ALICE, BUY, quote_budget=0), RejectReason.QUOTE_BUDGET_NOT_POSITIVE_INTEGER),
        (Cancel(42, ALICE), RejectReason.ORDER_NOT_FOUND),
        (Cancel(1, ALICE), RejectReason.NOT_ORDER_OWNER),
        (Amend(1, BOB), RejectReason.AMEND_NO_CHANGE),
        (Amend(1, BOB, 99, 6), RejectReason.AMEND_NO_CHANGE),
        (Amend(1, BOB, amount_base=5), RejectReason.AMOUNT_NOT_LOT_MULTIPLE),
        (Amend(1, BOB, price_ticks=-1), RejectReason.PRICE_NOT_POSITIVE_INTEGER),
        (Amend(2, CAROL, price_ticks=99), RejectReason.WOULD_TAKE),  # post-only amend
        (CancelAll(""), RejectReason.INVALID_ACCOUNT),
    ],
)
def test_rejected_commands_leave_the_book_unchanged(command: Command, reason: RejectReason) -> None:
    book = book_with(
        PlaceLimit(1, BOB, BUY, 99, 6),
        PlaceLimit(2, CAROL, SELL, 101, 4, TimeInForce.POST_ONLY),
    )
    before = book.state_hash()
    events = book.apply(command)
    assert len(events) == 1
    assert isinstance(events[0], Rejected)
    assert events[0].reason is reason
    assert book.state_hash() == before


# ------------------------------------------------------------- price-time priority


def test_taker_meets_best_price_then_oldest_and_pays_the_makers_price() -> None:
    book = book_with(
        PlaceLimit(1, ALICE, SELL, 102, 4),
        PlaceLimit(2, BOB, SELL, 101, 4),
        PlaceLimit(3, CAROL, SELL, 101, 4),
    )
    events = book.apply(PlaceLimit(4, "0xD0D", BUY, 102, 10))
    trades = of_type(events, Trade)
    assert [(t.maker_order_id, t.price_ticks, t.amount_base) for t in trades] == [
        (2, 101, 4),
        (3, 101, 4),
        (1, 102, 2),
    ]
    assert trades[0].quote_amount == MARKET.quote_amount(101, 4) == 101 * 2 * 6
    assert of_type(events, LevelChanged) == [
        LevelChanged(SELL, 101, 0, 0),
        LevelChanged(SELL, 102, 2, 1),
    ]
    assert book.best_ask() == LevelView(102, 2, 1)
    assert book.best_bid() is None


def test_amend_down_keeps_priority_and_amend_up_or_move_loses_it() -> None:
    book = book_with(
        *(PlaceLimit(order_id, ALICE if order_id % 2 else BOB, BUY, 100, 8) for order_id in (1, 2, 3))
    )
    events = book.apply(Amend(1, ALICE, amount_base=6))
    assert events[0] == Amended(1, ALICE, BUY, 100, 6, priority_kept=True)
    assert queue(book, BUY, 100) == [1, 2, 3]

    events = book.apply(Amend(2, BOB, amount_base=10))
    assert events[0] == Amended(2, BOB, BUY, 100, 10, priority_kept=False)
    assert queue(book, BUY, 100) == [1, 3, 2]

    book.apply(Amend(1, ALICE, price_ticks=99))
    book.apply(Amend(1, ALICE, price_ticks=100))
    assert queue(book, BUY, 100) == [3, 2, 1]
    order = book.order(1)
    assert order is not None
    assert (order.original_base, order.remaining_base, order.cancelled_base) == (8, 6, 2)


def test_amend_across_the_spread_trades_at_once() -> None:
    book = book_with(PlaceLimit(1, ALICE, SELL, 101, 4), PlaceLimit(2, BOB, BUY, 99, 6))
    events = book.apply(Amend(2, BOB, price_ticks=101))
    assert isinstance(events[0], Amended)
    assert [(t.maker_order_id, t.taker_order_id, t.amount_base) for t in of_type(events, Trade)] == [
        (1, 2, 4)
    ]
    assert book.level_orders(BUY, 101)[0].remaining_base == 2


# ---------------------------------------------------------------- time in force


def test_ioc_cancels_its_remainder() -> None:
    book = book_with(PlaceLimit(1, ALICE, SELL, 100, 4))
    events = book.apply(PlaceLimit(2, BOB, BUY, 100, 10, TimeInForce.IOC))
    assert of_type(events, Cancelled) == [Cancelled(2, BOB, BUY, CancelReason.IOC_REMAINDER, 6)]
    assert book.best_bid() is None


def test_fok_that_cannot_fill_leaves_no_trace_but_its_cancellation() -> None:
    book = book_with(
        PlaceLimit(1, ALICE, SELL, 100, 4),
        PlaceLimit(2, BOB, SELL, 100, 4),
        PlaceLimit(3, CAROL, SELL, 101, 4),
    )
    depth_before = book.depth()
    # 12 would need all three, but the 101 level is past the limit; Bob's own
    # order would only be skipped, never counted.
    events = book.apply(PlaceLimit(4, BOB, BUY, 100, 8, TimeInForce.FOK))
    assert events[1:] == [Cancelled(4, BOB, BUY, CancelReason.FOK, 8)]
    assert book.depth() == depth_before
    events = book.apply(PlaceLimit(5, BOB, BUY, 101, 8, TimeInForce.FOK))
    assert [t.maker_order_id for t in of_type(events, Trade)] == [1, 3]
    assert of_type(events, Cancelled) == [Cancelled(2, BOB, SELL, CancelReason.SELF_TRADE, 4)]


def test_post_only_rests_when_it_does_not_cross() -> None:
    book = book_with(PlaceLimit(1, ALICE, SELL, 101, 4))
    events = book.apply(PlaceLimit(2, BOB, BUY, 100, 4, TimeInForce.POST_ONLY))
    assert isinstance(events[0], Accepted)
    assert queue(book, BUY, 100) == [2]


# -------------------------------------------------------- self-trade prevention


@pytest.mark.parametrize(
    ("rule", "trades", "cancelled"),
    [
        (SelfTradePrevention.EXPIRE_MAKER, [3], [(2, CancelReason.SELF_TRADE)]),
        (SelfTradePrevention.EXPIRE_TAKER, [], [(4, CancelReason.SELF_TRADE)]),
        (SelfTradePrevention.EXPIRE_BOTH, [], [(2, CancelReason.SELF_TRADE), (4, CancelReason.SELF_TRADE)]),
    ],
)
def test_self_trade_prevention(rule: SelfTradePrevention, trades: list[int], cancelled: list[object]) -> None:
    book = book_with(PlaceLimit(2, ALICE, SELL, 100, 4), PlaceLimit(3, BOB, SELL, 100, 4))
    events = book.apply(PlaceLimit(4, ALICE, BUY, 100, 4, self_trade=rule))
    assert [t.maker_order_id for t in of_type(events, Trade)] == trades
    assert [(c.order_id, c.reason) for c in of_type(events, Cancelled)] == cancelled
    assert all(t.maker_account != t.taker_account for t in of_type(events, Trade))


def test_default_self_trade_rule_expires_the_maker() -> None:
    assert PlaceLimit(1, ALICE, BUY, 1, 4).self_trade is SelfTradePrevention.EXPIRE_MAKER


# ---------------------------------------------------------------- market orders


def test_market_buy_by_budget_takes_whole_lots_and_reports_unspent_quote() -> None:
    book = book_with(PlaceLimit(1, ALICE, SELL, 100, 4), PlaceLimit(2, BOB, SELL, 110, 10))
    one_lot_at_110 = MARKET.quote_amount(110, 2)
    budget = MARKET.quote_amount(100, 4) + 2 * one_lot_at_110 + 5
    events = book.apply(PlaceMarket(3, CAROL, BUY, quote_budget=budget))
    trades = of_type(events, Trade)
    assert [(t.price_ticks, t.amount_base) for t in trades] == [(100, 4), (110, 4)]
    assert of_type(events, Cancelled) == [
        Cancelled(3, CAROL, BUY, CancelReason.IOC_REMAINDER, 0, unspent_quote=5)
    ]
    assert sum(t.quote_amount for t in trades) + 5 == budget


def test_market_sell_by_amount_sweeps_and_cancels_the_rest() -> None:
    book = book_with(PlaceLimit(1, ALICE, BUY, 100, 4), PlaceLimit(2, BOB, BUY, 90, 4))
    events = book.apply(PlaceMarket(3, CAROL, SELL, amount_base=12))
    assert [t.price_ticks for t in of_type(events, Trade)] == [100, 90]
    assert of_type(events, Cancelled) == [Cancelled(3, CAROL, SELL, CancelReason.IOC_REMAINDER, 4)]


# ---------------------------------------------------------------- cancel and queries


def test_cancel_all_cancels_oldest_first_and_queries_follow() -> None:
    book = book_with(
        PlaceLimit(1, ALICE, BUY, 99, 4),
        PlaceLimit(2, BOB, BUY, 99, 6),
        PlaceLimit(3, ALICE, SELL, 105, 4),
        PlaceLimit(4, ALICE, BUY, 98, 8),
    )
    assert [o.order_id for o in book.open_orders(ALICE)] == [1, 3, 4]
    assert book.depth(1).bids == [LevelView(99, 10, 2)]
    events = book.apply(CancelAll(ALICE))
    assert [c.order_id for c in of_type(events, Cancelled)] == [1, 3, 4]
    assert of_type(events, LevelChanged) == [
        LevelChanged(BUY, 99, 6, 1),
        LevelChanged(SELL, 105, 0, 0),
        LevelChanged(BUY, 98, 0, 0),
    ]
    assert book.open_orders(ALICE) == []
    assert book.apply(CancelAll(ALICE)) == []
    assert len(book) == 1


def test_cancel_in_a_deep_level_unlinks_only_that_order() -> None:
    book = book_with(*(PlaceLimit(order_id, ALICE, BUY, 100, 4) for order_id in range(1, 2001)))
    book.apply(Cancel(1000, ALICE))
    book.apply(Cancel(1, ALICE))
    book.apply(Cancel(2000, ALICE))
    remaining = queue(book, BUY, 100)
    assert remaining == [order_id for order_id in range(2, 2000) if order_id != 1000]


# ------------------------------------------------------------------- snapshots


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{}",
        b'{"format":"something-else/9"}',
        b"\xff\x00",
        b'{"format":"exchange.orderbook/1","market":{}}',
    ],
)
def test_restore_refuses_what_is_not_a_snapshot(data: bytes) -> None:
    with pytest.raises(SnapshotError):
        OrderBook.restore(data)


def test_restore_refuses_a_tampered_snapshot() -> None:
    book = book_with(PlaceLimit(1, ALICE, BUY, 99, 4))
    tampered = book.snapshot().replace(b'"0xA11CE",99,4,0,4,0', b'"0xA11CE",99,4,0,6,0')
    assert tampered != book.snapshot()
    with pytest.raises(SnapshotError, match="inconsistent"):
        OrderBook.restore(tampered)
