"""Command generators shared by the order book tests.

``MARKET`` has a lot of 2, a minimum of 4 and 6 quote units per lot-tick, so
lot, minimum and budget rules all bite. Prices sit in a narrow band so orders
meet often; a few accounts make self-trades common.
"""

from __future__ import annotations

import random

from hypothesis import strategies as st

from exchange.orderbook import (
    Amend,
    Cancel,
    CancelAll,
    Command,
    MarketConfig,
    PlaceLimit,
    PlaceMarket,
    SelfTradePrevention,
    Side,
    TimeInForce,
)

MARKET = MarketConfig(
    market_id="BPC-USD",
    base_asset="BPC",
    quote_asset="USD",
    tick_size_quote=3,
    lot_size_base=2,
    min_amount_base=4,
)
ACCOUNTS = ("0xA11CE", "0xB0B", "0xCA7")
SIDES = (Side.BUY, Side.SELL)
TIME_IN_FORCE = tuple(TimeInForce)
SELF_TRADE = tuple(SelfTradePrevention)


def mostly(valid: st.SearchStrategy[int], invalid: list[int]) -> st.SearchStrategy[int]:
    """About one draw in ten is an invalid value."""
    return st.one_of(*([valid] * 9), st.sampled_from(invalid))


prices = mostly(st.integers(97, 103), [0, -3])
valid_amounts = st.integers(2, 12).map(lambda lots: lots * 2)
amounts = mostly(valid_amounts, [0, -4, 3, 2])
accounts = st.sampled_from(ACCOUNTS)
sides = st.sampled_from(SIDES)
# Buys mostly below sells, with an overlap, so that books fill up and still trade.
side_prices = {
    Side.BUY: mostly(st.integers(97, 100), [0, -3]),
    Side.SELL: mostly(st.integers(100, 103), [0, -3]),
}


def new_order_id(draw: st.DrawFn, last_order_id: int) -> int:
    """Usually the next id, sometimes a gap, rarely a duplicate or a bad id."""
    offset = draw(st.sampled_from([1] * 15 + [3, 0, -last_order_id]))
    return last_order_id + offset


@st.composite
def limit_orders(draw: st.DrawFn, last_order_id: int) -> Command:
    side = draw(sides)
    return PlaceLimit(
        new_order_id(draw, last_order_id),
        draw(accounts),
        side,
        draw(side_prices[side]),
        draw(amounts),
        draw(st.sampled_from((TimeInForce.GTC,) * 4 + TIME_IN_FORCE)),
        draw(st.sampled_from(SELF_TRADE)),
    )


@st.composite
def market_orders(draw: st.DrawFn, last_order_id: int) -> Command:
    side = draw(sides)
    by_budget = draw(st.booleans())
    return PlaceMarket(
        new_order_id(draw, last_order_id),
        draw(accounts),
        side,
        None if by_budget else draw(amounts),
        draw(st.integers(1, 3000)) if by_budget else None,
        draw(st.sampled_from([TimeInForce.IOC, TimeInForce.IOC, TimeInForce.FOK, TimeInForce.GTC])),
        draw(st.sampled_from(SELF_TRADE)),
    )


class RandomCommands:
    """Fast seeded command streams for replay tests (no Hypothesis overhead)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.last_order_id = 0
        self.live: list[tuple[int, str]] = []

    def next(self) -> Command:
        rng = self.rng
        roll = rng.random()
        account = rng.choice(ACCOUNTS)
        if roll < 0.35 or not self.live:
            self.last_order_id += rng.choice((1, 1, 1, 2))
            tif = rng.choice((TimeInForce.GTC, TimeInForce.GTC, TimeInForce.GTC, *TIME_IN_FORCE))
            self.live.append((self.last_order_id, account))
            return PlaceLimit(
                self.last_order_id,
                account,
                rng.choice(SIDES),
                rng.randint(95, 105),
                2 * rng.randint(2, 12),
                tif,
                rng.choice(SELF_TRADE),
            )
        if roll < 0.42:
            self.last_order_id += 1
            if rng.random() < 0.5:
                return PlaceMarket(self.last_order_id, account, Side.BUY, quote_budget=rng.randint(1, 3000))
            return PlaceMarket(
                self.last_order_id,
                account,
                rng.choice(SIDES),
                amount_base=2 * rng.randint(2, 12),
                time_in_force=rng.choice((TimeInForce.IOC, TimeInForce.FOK)),
            )
        order_id, owner = rng.choice(self.live)
        if roll < 0.55:
            return Cancel(order_id, owner)
        if roll < 0.57:
            return CancelAll(account)
        price = rng.randint(95, 105) if rng.random() < 0.8 else None
        amount = 2 * rng.randint(2, 12) if price is None or rng.random() < 0.3 else None
        return Amend(order_id, owner, price, amount)
